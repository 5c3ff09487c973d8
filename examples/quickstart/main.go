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
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/nsqkit/go-nsq"
)

const topic = "quickstart"

var (
	nsqdAddr = flag.String("nsqd", "", "TCP address (host:port) of the nsqd to publish to; empty runs one inside this program")
	nsqdHTTP = flag.String("nsqd-http", "", "HTTP address (host:port) of that nsqd, to read its count of the topic")
)

func main() {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *nsqdAddr, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run publishes to the nsqd at addr, or to one it runs itself when addr is
// empty, and writes what happened to out.
func run(ctx context.Context, addr string, out io.Writer) error {
	// nsqdCount, when set, returns how many messages nsqd has received on
	// the topic: nsqd's view, to compare with the producer's.
	var nsqdCount func(ctx context.Context) (uint64, error)
	if addr == "" {
		n, stop, err := startNsqd()
		if err != nil {
			return err
		}
		defer stop()
		addr = n.RealTCPAddr().String()
		nsqdCount = func(context.Context) (uint64, error) { return embeddedCount(n, topic), nil }
		fmt.Fprintln(out, "nsqd: running inside this program at", addr)
	} else if *nsqdHTTP != "" {
		nsqdCount = func(ctx context.Context) (uint64, error) { return httpCount(ctx, *nsqdHTTP, topic) }
	}
	var before uint64
	if nsqdCount != nil {
		var err error
		if before, err = nsqdCount(ctx); err != nil {
			return err
		}
	}

	// One Producer per nsqd, shared by the whole program: it connects on the
	// first publish and reconnects by itself.
	producer, err := nsq.NewProducer(addr, nsq.NewConfig())
	if err != nil {
		return err
	}
	defer producer.Stop()

	// Publish waits for nsqd's answer: nil means the message is stored.
	if err := producer.Publish(topic, []byte("hello")); err != nil {
		return fmt.Errorf("Publish: %w", err)
	}
	fmt.Fprintln(out, `Publish: 1 message stored`)

	// PublishAsync returns at once; each result arrives later on doneChan,
	// in publishing order, carrying the args given with it.
	doneChan := make(chan *nsq.ProducerTransaction, 10)
	for i := range 10 {
		body := fmt.Appendf(nil, "async message %d", i)
		if err := producer.PublishAsync(topic, body, doneChan, i); err != nil {
			return fmt.Errorf("PublishAsync: %w", err)
		}
	}
	var order []int
	for range 10 {
		select {
		case t := <-doneChan:
			if t.Error != nil {
				return fmt.Errorf("PublishAsync %d: %w", t.Args[0], t.Error)
			}
			order = append(order, t.Args[0].(int))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fmt.Fprintln(out, "PublishAsync: 10 messages stored, results in order", order)

	// MultiPublish sends its messages in one command: all stored, or none.
	bodies := make([][]byte, 5)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, "batch message %d", i)
	}
	if err := producer.MultiPublish(topic, bodies); err != nil {
		return fmt.Errorf("MultiPublish: %w", err)
	}
	fmt.Fprintln(out, "MultiPublish: 5 messages stored at once")

	// DeferredPublish: nsqd stores it now and hands it to consumers later.
	if err := producer.DeferredPublish(topic, 2*time.Second, []byte("later")); err != nil {
		return fmt.Errorf("DeferredPublish: %w", err)
	}
	fmt.Fprintln(out, "DeferredPublish: 1 message stored, for delivery in 2s")

	// Invalid input is refused at the call; nothing reaches nsqd.
	err = producer.Publish("bad topic", []byte("hello"))
	if !errors.Is(err, nsq.ErrInvalidTopic) {
		return fmt.Errorf(`Publish to "bad topic": got %v, want an ErrInvalidTopic`, err)
	}
	fmt.Fprintln(out, "refused:", err)

	// Stop waits for the answers to anything still pending, then
	// disconnects; Stats stays readable.
	producer.Stop()
	s := producer.Stats()
	fmt.Fprintf(out, "producer: %d messages published, %d refused\n", s.Published, s.Refused)

	if nsqdCount == nil {
		fmt.Fprintln(out, "nsqd: give -nsqd-http to compare with nsqd's own count")
		return nil
	}
	after, err := nsqdCount(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "nsqd: %d messages received on topic %q\n", after-before, topic)
	return nil
}
