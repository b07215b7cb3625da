// The workloads of docs/benchmarks.md, written the way a Go programmer would write
// them: goroutines, channels, sync.Mutex and sync.WaitGroup, nothing clever.
package main

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// spawnJoin starts n goroutines that each add 1 to an atomic counter and waits
// for all of them. Op: one goroutine.
func spawnJoin(n int64) result {
	var counter atomic.Int64
	var wg sync.WaitGroup
	wg.Add(int(n))
	for i := int64(0); i < n; i++ {
		go func() {
			counter.Add(1)
			wg.Done()
		}()
	}
	wg.Wait()
	return result{ops: n, ok: counter.Load() == n, bytesPerTask: -1}
}

// skynetNode is the classic skynet node: it spawns div children, each over
// size/div leaves, and sends the sum of their results to c. A leaf sends its
// own number.
func skynetNode(c chan<- int64, num, size, div int64) {
	if size == 1 {
		c <- num
		return
	}
	rc := make(chan int64, div)
	child := size / div
	for i := int64(0); i < div; i++ {
		go skynetNode(rc, num+i*child, child, div)
	}
	var sum int64
	for i := int64(0); i < div; i++ {
		sum += <-rc
	}
	c <- sum
}

// skynet runs skynet over n leaves (n a power of 10). Op: one goroutine; the
// root counts, so 1,000,000 leaves are 1,111,111 ops.
func skynet(n int64) result {
	ops := int64(0)
	for level := n; level >= 1; level /= 10 {
		ops += level
	}
	c := make(chan int64, 1)
	go skynetNode(c, 0, n, 10)
	sum := <-c
	return result{ops: ops, ok: sum == n*(n-1)/2, bytesPerTask: -1}
}

// fibTask computes fib(n), spawning a goroutine for fib(n-1) when n >= 2 and
// computing fib(n-2) inline; the spawned half is joined through a channel.
func fibTask(n int64) int64 {
	if n < 2 {
		return n
	}
	c := make(chan int64, 1)
	go func() { c <- fibTask(n - 1) }()
	b := fibTask(n - 2)
	return <-c + b
}

// fibSpawns returns fib(n) and the number of calls with n >= 2, i.e. the
// number of goroutines fibTask(n) spawns.
func fibSpawns(n int64) (value, spawns int64) {
	a, b := int64(0), int64(1) // fib(0), fib(1)
	for i := int64(0); i < n; i++ {
		a, b = b, a+b
	}
	// calls(n) with n >= 2 satisfy s(n) = 1 + s(n-1) + s(n-2), s(0) = s(1) = 0,
	// whose solution is fib(n+1) - 1.
	return a, b - 1
}

// fib runs fibTask(n). Op: one spawned goroutine (fib(30): 1,346,268).
func fib(n int64) result {
	want, spawns := fibSpawns(n)
	got := fibTask(n)
	return result{ops: spawns, ok: got == want, bytesPerTask: -1}
}

// yieldPing runs two goroutines on one P that only yield, n switches in all.
// Op: one switch (one runtime.Gosched).
func yieldPing(n int64) result {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	var wg sync.WaitGroup
	var yields atomic.Int64
	wg.Add(2)
	for g := 0; g < 2; g++ {
		go func() {
			defer wg.Done()
			for i := int64(0); i < n/2; i++ {
				runtime.Gosched()
			}
			yields.Add(n / 2)
		}()
	}
	wg.Wait()
	ops := yields.Load()
	return result{ops: ops, ok: ops == n/2*2 && ops > 0, bytesPerTask: -1}
}

// pingPong bounces one int between two goroutines over two unbuffered
// channels, n round trips. Op: one round trip.
func pingPong(n int64) result {
	ping, pong := make(chan int64), make(chan int64)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
		close(pong)
	}()
	v := int64(0)
	for i := int64(0); i < n; i++ {
		ping <- v
		v = <-pong
	}
	close(ping)
	return result{ops: n, ok: v == n, bytesPerTask: -1}
}

// chanMPMC sends the ints 0..n-1 through one channel of capacity 1024 from 4
// producers to 4 consumers. Op: one item.
func chanMPMC(n int64) result {
	const producers, consumers, capacity = 4, 4, 1024
	ch := make(chan int64, capacity)
	var prodWG, consWG sync.WaitGroup
	prodWG.Add(producers)
	for p := int64(0); p < producers; p++ {
		go func(p int64) {
			defer prodWG.Done()
			for v := p; v < n; v += producers {
				ch <- v
			}
		}(p)
	}
	var sum, count atomic.Int64
	consWG.Add(consumers)
	for c := 0; c < consumers; c++ {
		go func() {
			defer consWG.Done()
			var s, k int64
			for v := range ch {
				s += v
				k++
			}
			sum.Add(s)
			count.Add(k)
		}()
	}
	prodWG.Wait()
	close(ch)
	consWG.Wait()
	ok := count.Load() == n && sum.Load() == n*(n-1)/2
	return result{ops: n, ok: ok, bytesPerTask: -1}
}

// mutexContention runs 8 goroutines that each increment a shared counter
// under a sync.Mutex n/8 times. Op: one lock + increment + unlock.
func mutexContention(n int64) result {
	const workers = 8
	per := n / workers
	var mu sync.Mutex
	counter := int64(0)
	var wg sync.WaitGroup
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func() {
			defer wg.Done()
			for i := int64(0); i < per; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	ops := per * workers
	return result{ops: ops, ok: counter == ops && ops > 0, bytesPerTask: -1}
}

// idleTasks parks n goroutines on one channel, reads the peak RSS once all
// are blocked, then releases them with close and joins them. Op: one
// goroutine; the figure that matters is bytes_per_task, the peak RSS growth
// over the baseline taken before the first goroutine starts, divided by n.
func idleTasks(n int64) result {
	baseline := peakRSSKB()
	release := make(chan struct{})
	var started, done sync.WaitGroup
	started.Add(int(n))
	done.Add(int(n))
	var woken atomic.Int64
	for i := int64(0); i < n; i++ {
		go func() {
			started.Done()
			<-release
			woken.Add(1)
			done.Done()
		}()
	}
	started.Wait()
	runtime.Gosched() // let the last starters reach <-release
	peak := peakRSSKB()
	close(release)
	done.Wait()
	perTask := float64(peak-baseline) * 1024 / float64(n)
	return result{ops: n, ok: woken.Load() == n, bytesPerTask: perTask}
}
