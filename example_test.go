package nsq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/nsqkit/go-nsq"
)

// This is the smallest complete use of a Producer: make it, publish, stop.
func Example() {
	// 127.0.0.1:4150 is where nsqd listens for TCP clients by default.
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	// Stop waits for the answers to everything published, then disconnects.
	defer producer.Stop()

	if err := producer.Publish("greetings", []byte("hello, nsq")); err != nil {
		log.Fatal(err)
	}
	fmt.Println("published")
	// Output: published
}

func ExampleProducer_Publish() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	// Publish returns once nsqd has stored the message (nil) or refused it.
	err = producer.Publish("orders", []byte(`{"id": 1, "item": "book"}`))
	fmt.Println("error:", err)
	// Output: error: <nil>
}

func ExampleProducer_PublishAsync() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	// Each result comes back on doneChan, in publishing order, with the
	// args given to its PublishAsync.
	doneChan := make(chan *nsq.ProducerTransaction, 3)
	for id := 1; id <= 3; id++ {
		body := fmt.Appendf(nil, `{"id": %d}`, id) // untouched until its result arrives
		if err := producer.PublishAsync("orders", body, doneChan, "order", id); err != nil {
			log.Fatal(err) // not accepted: invalid input or a stopped producer
		}
	}
	for range 3 {
		t := <-doneChan
		fmt.Printf("%v %v: error %v\n", t.Args[0], t.Args[1], t.Error)
	}
	// Output:
	// order 1: error <nil>
	// order 2: error <nil>
	// order 3: error <nil>
}

func ExampleProducer_MultiPublish() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	// One MPUB command: nsqd stores all the messages or none.
	bodies := [][]byte{[]byte("red"), []byte("green"), []byte("blue")}
	if err := producer.MultiPublish("colors", bodies); err != nil {
		log.Fatal(err)
	}
	fmt.Println("published:", producer.Stats().Published)
	// Output: published: 3
}

func ExampleProducer_DeferredPublish() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	// nsqd stores the message now and hands it to consumers in a minute.
	err = producer.DeferredPublish("reminders", time.Minute, []byte("call back"))
	fmt.Println("error:", err)
	// Output: error: <nil>
}

func ExampleProducer_PublishContext() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = producer.PublishContext(ctx, "orders", []byte(`{"id": 4}`))
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		// No answer in time: the publish may still succeed.
		fmt.Println("timed out:", err)
	case err != nil:
		fmt.Println("failed:", err)
	default:
		fmt.Println("published")
	}
	// Output: published
}

func ExampleProducer_PublishAsyncContext() {
	cfg := nsq.NewConfig()
	cfg.MaxPending = 1 // room for a single publish awaiting its result
	producer, err := nsq.NewProducer("127.0.0.1:4150", cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	// A publish holds its room until its result is taken from doneChan,
	// which nobody reads yet.
	doneChan := make(chan *nsq.ProducerTransaction)
	if err := producer.PublishAsync("orders", []byte(`{"id": 5}`), doneChan); err != nil {
		log.Fatal(err)
	}

	// So the next publish waits for room, here for at most 100ms.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = producer.PublishAsyncContext(ctx, "orders", []byte(`{"id": 6}`), doneChan)
	fmt.Println("second publish:", err)

	t := <-doneChan // frees the room
	fmt.Println("first result:", t.Error)
	// Output:
	// second publish: context deadline exceeded
	// first result: <nil>
}

func ExampleProducer_TryPublishAsync() {
	cfg := nsq.NewConfig()
	cfg.MaxPending = 1
	producer, err := nsq.NewProducer("127.0.0.1:4150", cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	doneChan := make(chan *nsq.ProducerTransaction)
	err = producer.TryPublishAsync("metrics", []byte("cpu=0.5"), doneChan)
	fmt.Println("first:", err)

	// The first publish is pending until its result is read: no room for
	// a second one, and TryPublishAsync does not wait for it.
	err = producer.TryPublishAsync("metrics", []byte("cpu=0.7"), doneChan)
	fmt.Println("second:", err)
	if errors.Is(err, nsq.ErrPendingFull) {
		fmt.Println("dropped a sample")
	}

	t := <-doneChan
	fmt.Println("first result:", t.Error)
	// Output:
	// first: <nil>
	// second: nsq: too many publishes pending (max_pending / max_pending_bytes)
	// dropped a sample
	// first result: <nil>
}

func ExampleProducer_Flush() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	// Fire and forget: a nil doneChan drops the results...
	for i := range 100 {
		if err := producer.PublishAsync("clicks", fmt.Appendf(nil, "click %d", i), nil); err != nil {
			log.Fatal(err)
		}
	}
	// ...and Flush waits until all of them have their answer.
	if err := producer.Flush(context.Background()); err != nil {
		log.Fatal(err)
	}
	s := producer.Stats()
	fmt.Println("published:", s.Published, "failed:", s.NeverSent+s.UnknownOutcome)
	// Output: published: 100 failed: 0
}

func ExampleProducer_Stats() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	for range 3 {
		if err := producer.Publish("stats", []byte("sample")); err != nil {
			log.Fatal(err)
		}
	}
	_ = producer.Publish("bad topic", []byte("sample")) // refused at the call

	s := producer.Stats()
	fmt.Println("published:", s.Published)
	fmt.Println("bytes:", s.PublishedBytes)
	fmt.Println("refused:", s.Refused)
	fmt.Println("pending:", s.Pending)
	fmt.Println("connects:", s.Connects)
	// Output:
	// published: 3
	// bytes: 18
	// refused: 1
	// pending: 0
	// connects: 1
}

func ExampleNewSlogLogger() {
	var out bytes.Buffer
	handler := slog.NewTextHandler(&out, &slog.HandlerOptions{
		// Drop the time and the producer's number, which change from run
		// to run, so that the output below is stable.
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == "producer") {
				return slog.Attr{}
			}
			return a
		},
	})

	// Nothing listens on port 1, so the publish fails and the producer
	// logs its attempts to connect.
	producer, err := nsq.NewProducer("127.0.0.1:1", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	producer.SetLogger(nsq.NewSlogLogger(slog.New(handler)), nsq.LogLevelInfo)

	err = producer.Publish("events", []byte("hello"))
	producer.Stop()
	fmt.Println("never sent:", errors.Is(err, nsq.ErrNeverSent))

	// The first record; the next ones, at level ERROR, say why the
	// connection failed.
	first, _, _ := strings.Cut(out.String(), "\n")
	fmt.Println(first)
	// Output:
	// never sent: true
	// level=INFO msg="(127.0.0.1:1) connecting to nsqd" nsqd=127.0.0.1:1
}

// Invalid input is refused at the call, before it reaches nsqd, with an
// error that wraps ErrInvalidTopic, ErrEmptyBody, ErrTooLarge or
// ErrInvalidDelay; nothing is sent. After Stop, every call returns
// ErrStopped.
func Example_errors() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}

	err = producer.Publish("bad topic", []byte("hello"))
	fmt.Println(errors.Is(err, nsq.ErrInvalidTopic), err)

	err = producer.Publish("events", nil)
	fmt.Println(errors.Is(err, nsq.ErrEmptyBody), err)

	producer.Stop()
	err = producer.Publish("events", []byte("hello"))
	fmt.Println(err == nsq.ErrStopped, err)
	// Output:
	// true nsq: invalid topic name "bad topic": want 1 to 64 characters of [.a-zA-Z0-9_-], optionally followed by #ephemeral
	// true nsq: empty message body: message body is empty (nsqd refuses empty messages)
	// true stopped
}

func ExampleProducer_MultiPublishContext() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	batch := [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	// Stored all or none, or the context's error when nsqd is too slow.
	fmt.Println("error:", producer.MultiPublishContext(ctx, "letters", batch))
	// Output: error: <nil>
}

func ExampleProducer_DeferredPublishContext() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = producer.DeferredPublishContext(ctx, "reminders", time.Minute, []byte("call back"))
	fmt.Println("error:", err)

	// Delays are checked at the call, against Config.MaxDeferredDelay (1h).
	err = producer.DeferredPublishContext(ctx, "reminders", 2*time.Hour, []byte("too late"))
	fmt.Println(errors.Is(err, nsq.ErrInvalidDelay))
	// Output:
	// error: <nil>
	// true
}

func ExampleProducer_MultiPublishAsyncContext() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	done := make(chan *nsq.ProducerTransaction, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// ctx bounds only the wait for room under Config.MaxPending; the bodies
	// are copied, so they may be reused at once.
	batch := [][]byte{[]byte("x"), []byte("y")}
	if err := producer.MultiPublishAsyncContext(ctx, "letters", batch, done, "batch-1"); err != nil {
		log.Fatal(err)
	}
	batch[0][0] = 'z'
	t := <-done
	fmt.Println(t.Args[0], t.Error)
	// Output: batch-1 <nil>
}

func ExampleProducer_DeferredPublishAsyncContext() {
	producer, err := nsq.NewProducer("127.0.0.1:4150", nsq.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Stop()

	done := make(chan *nsq.ProducerTransaction, 1)
	if err := producer.DeferredPublishAsyncContext(context.Background(), "reminders", time.Second, []byte("soon"), done); err != nil {
		log.Fatal(err)
	}
	fmt.Println((<-done).Error)
	// Output: <nil>
}

func ExampleErrProtocol_Code() {
	err := error(nsq.ErrProtocol{Reason: "E_BAD_MESSAGE PUB message too big 2000 > 1024"})
	var perr nsq.ErrProtocol
	if errors.As(err, &perr) {
		fmt.Println(perr.Code())
	}
	// Output: E_BAD_MESSAGE
}
