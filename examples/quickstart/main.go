// Quickstart publishes to nsqd with github.com/nsqkit/go-nsq, in each of the
// ways a Producer offers, and prints what nsqd confirmed.
//
// With no flags it runs an nsqd inside the program, so nothing needs to be
// installed:
//
//	go run ./quickstart
//
// To publish to your own nsqd, give its TCP address, and its HTTP address
// to compare the producer's count with nsqd's:
//
//	go run ./quickstart -nsqd 127.0.0.1:4150 -nsqd-http 127.0.0.1:4151
//
// To publish over several nsqd with a ProducerPool, repeat -nsqd, or give
// an nsqlookupd's HTTP address to publish to every nsqd it lists:
//
//	go run ./quickstart -nsqd 127.0.0.1:4150 -nsqd 127.0.0.1:5150
//	go run ./quickstart -lookupd 127.0.0.1:4161
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/nsqkit/go-nsq"
)

const topic = "quickstart"

// options are the command line's.
type options struct {
	nsqd     []string // -nsqd, repeatable: nsqd TCP addresses
	nsqdHTTP string   // -nsqd-http: the HTTP address of the one nsqd
	lookupd  string   // -lookupd: an nsqlookupd HTTP address
}

func main() {
	var o options
	flag.Func("nsqd", "TCP address (host:port) of an nsqd to publish to; repeat it to publish over several with a ProducerPool; none (and no -lookupd) runs one inside this program",
		func(addr string) error { o.nsqd = append(o.nsqd, addr); return nil })
	flag.StringVar(&o.nsqdHTTP, "nsqd-http", "", "HTTP address (host:port) of that nsqd, to read its count of the topic (one -nsqd only)")
	flag.StringVar(&o.lookupd, "lookupd", "", "HTTP address (host:port) of an nsqlookupd: publish with a ProducerPool to every nsqd it lists")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run publishes to the nsqd o names, or to one it runs itself when o names
// none, and writes what happened to out.
func run(ctx context.Context, o options, out io.Writer) error {
	t, err := open(o, out)
	if err != nil {
		return err
	}
	defer t.close()
	var before uint64
	if t.count != nil {
		if before, err = t.count(ctx); err != nil {
			return err
		}
	}
	if err := publishAll(ctx, t.pub, out); err != nil {
		return err
	}
	// Flush waits for the answers to anything still pending; Stop then
	// disconnects.
	if err := t.pub.Flush(ctx); err != nil {
		return err
	}
	fmt.Fprintln(out, t.stats())
	t.pub.Stop()
	if t.count == nil {
		fmt.Fprintln(out, "nsqd: give -nsqd-http (with one -nsqd) to compare with nsqd's own count")
		return nil
	}
	after, err := t.count(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "nsqd: %d messages received on topic %q\n", after-before, topic)
	return nil
}

// target is where run publishes: a Producer, or a ProducerPool. Both are
// an nsq.Publisher, so the code that publishes does not care which.
type target struct {
	pub   nsq.Publisher
	stats func() string                             // its counters
	count func(ctx context.Context) (uint64, error) // nsqd's count of the topic; nil when unknown
	close func()
}

// open makes the target o names: a pool for several nsqd or an nsqlookupd,
// a Producer for one nsqd, or a Producer to an nsqd run in this program.
func open(o options, out io.Writer) (*target, error) {
	if len(o.nsqd) > 1 || o.lookupd != "" {
		return openPool(o)
	}
	t := &target{close: func() {}}
	addr := ""
	if len(o.nsqd) == 1 {
		addr = o.nsqd[0]
		if o.nsqdHTTP != "" {
			t.count = func(ctx context.Context) (uint64, error) { return httpCount(ctx, o.nsqdHTTP, topic) }
		}
	} else {
		n, stop, err := startNsqd()
		if err != nil {
			return nil, err
		}
		t.close = stop
		addr = n.RealTCPAddr().String()
		t.count = func(context.Context) (uint64, error) { return embeddedCount(n, topic), nil }
		fmt.Fprintln(out, "nsqd: running inside this program at", addr)
	}
	// One Producer per nsqd, shared by the whole program: it connects on the
	// first publish and reconnects by itself.
	producer, err := nsq.NewProducer(addr, nsq.NewConfig())
	if err != nil {
		t.close()
		return nil, err
	}
	t.pub = producer
	t.stats = func() string {
		s := producer.Stats()
		return fmt.Sprintf("producer: %d messages published, %d refused", s.Published, s.Refused)
	}
	return t, nil
}

// openPool makes a ProducerPool over o's nsqd and the nodes of its
// nsqlookupd.
func openPool(o options) (*target, error) {
	pool, err := nsq.NewProducerPool(o.nsqd, nsq.NewConfig())
	if err != nil {
		return nil, err
	}
	if o.lookupd != "" {
		if err := pool.ConnectToNSQLookupd(o.lookupd); err != nil {
			pool.Stop()
			return nil, err
		}
	}
	stats := func() string {
		s := pool.Stats()
		line := fmt.Sprintf("pool: %d messages published, %d refused; per nsqd:", s.Published, s.Refused)
		for _, n := range s.Nodes {
			line += fmt.Sprintf(" %s %d", n.Addr, n.Published)
		}
		return line
	}
	return &target{pub: pool, stats: stats, close: pool.Stop}, nil
}
