// fasthttp-peer: the Go peer of `cargo xtask bench`, a "Hello, World!" server on fasthttp,
// optionally under fasthttp/prefork (one child process per GOMAXPROCS, each with GOMAXPROCS=1).
//
// Flags:
//
//	-addr       listen address (default 127.0.0.1:8080)
//	-prefork    serve under fasthttp/prefork
//	-workers    with -prefork: child processes (default: GOMAXPROCS, i.e. the CPUs it may use)
//	-reuseport  with -prefork: each child opens its own SO_REUSEPORT socket instead of sharing
//	            the master's listener (fasthttp's default)
//	-sleep      the handler sleeps this long before answering (e.g. 100ms; 0 = none)
//	-cert/-key  PEM files: serve HTTPS (crypto/tls; TLS 1.3 is the default maximum)
//
// Every answer is 200, Content-Type text/plain, body "Hello, World!" (13 bytes).
// Built offline from Debian's sources by ../setup.sh (GOPATH mode, no module proxy).
package main

import (
	"flag"
	"log"
	"os"
	"runtime"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/prefork"
)

var body = []byte("Hello, World!")

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	usePrefork := flag.Bool("prefork", false, "serve under fasthttp/prefork")
	workers := flag.Int("workers", 0, "with -prefork: child processes (0 = GOMAXPROCS)")
	reusePort := flag.Bool("reuseport", false, "with -prefork: one SO_REUSEPORT listener per child")
	sleep := flag.Duration("sleep", 0, "handler sleep (0 = none)")
	cert := flag.String("cert", "", "certificate chain (PEM): serve HTTPS")
	key := flag.String("key", "", "private key (PEM) for -cert")
	flag.Parse()
	if (*cert == "") != (*key == "") {
		log.Fatal("-cert and -key go together")
	}

	d := *sleep
	server := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if d > 0 {
				time.Sleep(d)
			}
			ctx.SetStatusCode(fasthttp.StatusOK)
			ctx.SetContentType("text/plain")
			ctx.SetBody(body)
		},
		Name: "fasthttp-peer",
	}

	if !*usePrefork {
		var err error
		if *cert != "" {
			err = server.ListenAndServeTLS(*addr, *cert, *key)
		} else {
			err = server.ListenAndServe(*addr)
		}
		log.Fatalf("serve: %v", err)
	}

	if prefork.IsChild() {
		// fasthttp's prefork master does not kill its children when a signal kills it:
		// a child exits by itself once it is orphaned.
		ppid := os.Getppid()
		go func() {
			for {
				time.Sleep(250 * time.Millisecond)
				if os.Getppid() != ppid {
					os.Exit(0)
				}
			}
		}()
	} else if *workers > 0 {
		// The master starts one child per GOMAXPROCS.
		runtime.GOMAXPROCS(*workers)
	}
	p := prefork.New(server)
	p.Reuseport = *reusePort
	var err error
	if *cert != "" {
		// fasthttp 1.31's signature is (addr, certKey, certFile).
		err = p.ListenAndServeTLS(*addr, *key, *cert)
	} else {
		err = p.ListenAndServe(*addr)
	}
	log.Fatalf("prefork serve: %v", err)
}
