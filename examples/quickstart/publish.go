package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/nsqkit/go-nsq"
)

// publishAll publishes in each of the ways a Publisher offers.
func publishAll(ctx context.Context, pub nsq.Publisher, out io.Writer) error {
	for _, step := range []func(context.Context, nsq.Publisher, io.Writer) error{
		publishOne, publishAsync, publishBatch, publishDeferred, publishInvalid,
	} {
		if err := step(ctx, pub, out); err != nil {
			return err
		}
	}
	return nil
}

// publishOne: Publish waits for nsqd's answer: nil means the message is
// stored.
func publishOne(ctx context.Context, pub nsq.Publisher, out io.Writer) error {
	if err := pub.PublishContext(ctx, topic, []byte("hello")); err != nil {
		return fmt.Errorf("Publish: %w", err)
	}
	fmt.Fprintln(out, `Publish: 1 message stored`)
	return nil
}

// publishAsync: PublishAsync returns at once; each result arrives later on
// doneChan, carrying the args given with it. A Producer delivers them in
// publishing order; a pool in the order its nodes answered.
func publishAsync(ctx context.Context, pub nsq.Publisher, out io.Writer) error {
	doneChan := make(chan *nsq.ProducerTransaction, 10)
	for i := range 10 {
		body := fmt.Appendf(nil, "async message %d", i)
		if err := pub.PublishAsync(topic, body, doneChan, i); err != nil {
			return fmt.Errorf("PublishAsync: %w", err)
		}
	}
	var got []int
	for range 10 {
		select {
		case t := <-doneChan:
			if t.Error != nil {
				return fmt.Errorf("PublishAsync %d: %w", t.Args[0], t.Error)
			}
			got = append(got, t.Args[0].(int))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	slices.Sort(got)
	fmt.Fprintln(out, "PublishAsync: 10 messages stored, results for", got)
	return nil
}

// publishBatch: MultiPublish sends its messages in one command: all
// stored, or none.
func publishBatch(ctx context.Context, pub nsq.Publisher, out io.Writer) error {
	bodies := make([][]byte, 5)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, "batch message %d", i)
	}
	if err := pub.MultiPublishContext(ctx, topic, bodies); err != nil {
		return fmt.Errorf("MultiPublish: %w", err)
	}
	fmt.Fprintln(out, "MultiPublish: 5 messages stored at once")
	return nil
}

// publishDeferred: nsqd stores it now and hands it to consumers later.
func publishDeferred(ctx context.Context, pub nsq.Publisher, out io.Writer) error {
	if err := pub.DeferredPublishContext(ctx, topic, 2*time.Second, []byte("later")); err != nil {
		return fmt.Errorf("DeferredPublish: %w", err)
	}
	fmt.Fprintln(out, "DeferredPublish: 1 message stored, for delivery in 2s")
	return nil
}

// publishInvalid: invalid input is refused at the call; nothing reaches
// nsqd.
func publishInvalid(ctx context.Context, pub nsq.Publisher, out io.Writer) error {
	err := pub.PublishContext(ctx, "bad topic", []byte("hello"))
	if !errors.Is(err, nsq.ErrInvalidTopic) {
		return fmt.Errorf(`Publish to "bad topic": got %v, want an ErrInvalidTopic`, err)
	}
	fmt.Fprintln(out, "refused:", err)
	return nil
}
