// echo_server: the Go peer of the tcp_echo workload (perf/servers/): a
// goroutine per connection, the same buffering as the mpg and threads
// servers (512 bytes, switching to 64 KiB the first time a read fills it).
//
//	echo_server --port 9000 [--procs 2] [--host 127.0.0.1]
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
)

func handle(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 512)
	grown := false
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
		if n == len(buf) && !grown {
			buf = make([]byte, 64*1024)
			grown = true
		}
	}
}

func main() {
	port := flag.Int("port", 9000, "port")
	host := flag.String("host", "127.0.0.1", "host")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: default)")
	flag.Parse()
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", *host, *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo_server:", err)
		os.Exit(1)
	}
	fmt.Println("listening on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go handle(c)
	}
}
