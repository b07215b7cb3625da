// http_server: the Go peer of the http_hello workload (perf/servers/):
// net/http answering "Hello, World!" with keep-alive.
//
//	http_server --port 8080 [--procs 2] [--host 127.0.0.1]
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
)

func main() {
	port := flag.Int("port", 8080, "port")
	host := flag.String("host", "127.0.0.1", "host")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: default)")
	flag.Parse()
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	body := []byte("Hello, World!")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	})
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", *host, *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "http_server:", err)
		os.Exit(1)
	}
	fmt.Println("listening on", ln.Addr())
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, "http_server:", err)
		os.Exit(1)
	}
}
