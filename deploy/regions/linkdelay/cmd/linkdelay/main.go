// Command linkdelay runs the delaying links of package linkdelay for
// deploy/regions.sh: one listener per -link, all delayed alike, cut and
// restored together over a small HTTP control port.
//
//	linkdelay -delay 20ms -control 127.0.0.1:9300 \
//	    -link 127.0.0.1:17222=127.0.0.1:7222 -link 127.0.0.1:17322=127.0.0.1:7322
//
//	curl -X POST http://127.0.0.1:9300/cut        # drop every connection, refuse new ones (closed port)
//	curl -X POST http://127.0.0.1:9300/blackhole  # forward nothing, tell nobody
//	curl -X POST http://127.0.0.1:9300/restore
//	curl http://127.0.0.1:9300/status             # mode and counters of each link (JSON)
//
// It stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/natsrtc/signal/deploy/regions/linkdelay"
)

type links []string

func (l *links) String() string     { return strings.Join(*l, ",") }
func (l *links) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "linkdelay:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	var ls links
	delay := flag.Duration("delay", 20*time.Millisecond, "delay added to each direction (a round trip pays it twice)")
	control := flag.String("control", "127.0.0.1:9300", "address of the HTTP control port (POST /cut, /blackhole, /restore; GET /status)")
	flag.Var(&ls, "link", "LISTEN=TARGET: forward connections accepted on LISTEN to TARGET (repeat for each link)")
	flag.Parse()
	if len(ls) == 0 {
		return errors.New("no -link given")
	}
	var all []*linkdelay.Link
	defer func() {
		for _, l := range all {
			l.Close()
		}
	}()
	for _, spec := range ls {
		listen, target, ok := strings.Cut(spec, "=")
		if !ok || listen == "" || target == "" {
			return fmt.Errorf("-link %q: want LISTEN=TARGET", spec)
		}
		l, err := linkdelay.Listen(listen, target, *delay)
		if err != nil {
			return err
		}
		all = append(all, l)
		log.Printf("link %s -> %s, %v each way", l.Addr(), target, *delay)
	}

	mux := http.NewServeMux()
	set := func(do func(*linkdelay.Link) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				http.Error(w, "POST only", http.StatusMethodNotAllowed)
				return
			}
			for _, l := range all {
				if err := do(l); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
			}
			log.Printf("%s: links %s", r.URL.Path, all[0].Mode())
			fmt.Fprintln(w, all[0].Mode())
		}
	}
	mux.HandleFunc("/cut", set(func(l *linkdelay.Link) error { l.Cut(); return nil }))
	mux.HandleFunc("/blackhole", set(func(l *linkdelay.Link) error { l.Blackhole(); return nil }))
	mux.HandleFunc("/restore", set((*linkdelay.Link).Restore))
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		st := make([]linkdelay.Stats, len(all))
		for i, l := range all {
			st[i] = l.Stats()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	cln, err := net.Listen("tcp", *control)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(cln) }()
	log.Printf("control on http://%s/ (POST /cut, /blackhole, /restore; GET /status)", cln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
