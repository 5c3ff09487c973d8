package nsq

import (
	"context"
	"time"
)

// PublishContext is Publish bounded by ctx. If ctx ends before the publish
// is accepted (while the producer waits for room under Config.MaxPending),
// it returns ctx's error and nothing is sent. If ctx ends while it waits for
// nsqd's answer, including while the producer is still connecting (dial,
// IDENTIFY, TLS, AUTH), it returns early with an error for which
// errors.Is(err, ctx.Err()) holds, and which says what became of the
// publish:
//
//   - errors.Is(err, ErrNeverSent): it was not written (or nsqd refused the
//     command before it and executed neither), and it never will be;
//     publishing it again is safe.
//   - errors.Is(err, ErrUnknownOutcome): it was written; nsqd may store it
//     (its answer is still matched to it, and counted in Stats).
//
// When ctx ends while the body is being written, the call returns once the
// write goroutine is done with it (within Config.WriteTimeout per MiB), so
// that body may be reused as soon as the call returns, in every case. (If
// nsqd's answer comes first, the call returns it.) A connection attempt is
// shared by every publish, so it goes on.
func (p *Producer) PublishContext(ctx context.Context, topic string, body []byte) error {
	return p.publishSync(ctx, kindPUB, topic, 0, body, nil)
}

// MultiPublishContext is MultiPublish bounded by ctx: see PublishContext.
func (p *Producer) MultiPublishContext(ctx context.Context, topic string, body [][]byte) error {
	return p.publishSync(ctx, kindMPUB, topic, 0, nil, body)
}

// DeferredPublishContext is DeferredPublish bounded by ctx: see
// PublishContext.
func (p *Producer) DeferredPublishContext(ctx context.Context, topic string, delay time.Duration, body []byte) error {
	return p.publishSync(ctx, kindDPUB, topic, delay, body, nil)
}

// PublishAsyncContext is PublishAsync whose wait for room under
// Config.MaxPending and Config.MaxPendingBytes is bounded by ctx: if ctx ends
// first it returns ctx's error and the publish is not accepted. Once
// accepted, the publish is no longer tied to ctx.
func (p *Producer) PublishAsyncContext(ctx context.Context, topic string, body []byte, doneChan chan *ProducerTransaction, args ...any) error {
	return p.publishAsync(ctx, true, kindPUB, topic, 0, body, nil, doneChan, args)
}

// MultiPublishAsyncContext is MultiPublishAsync with PublishAsyncContext's
// bounded wait.
func (p *Producer) MultiPublishAsyncContext(ctx context.Context, topic string, body [][]byte, doneChan chan *ProducerTransaction, args ...any) error {
	return p.publishAsync(ctx, true, kindMPUB, topic, 0, nil, body, doneChan, args)
}

// DeferredPublishAsyncContext is DeferredPublishAsync with
// PublishAsyncContext's bounded wait.
func (p *Producer) DeferredPublishAsyncContext(ctx context.Context, topic string, delay time.Duration, body []byte, doneChan chan *ProducerTransaction, args ...any) error {
	return p.publishAsync(ctx, true, kindDPUB, topic, delay, body, nil, doneChan, args)
}

// TryPublishAsync is PublishAsync that never waits: when Config.MaxPending
// publishes (or Config.MaxPendingBytes) are pending it returns
// ErrPendingFull at once and the publish is not accepted.
func (p *Producer) TryPublishAsync(topic string, body []byte, doneChan chan *ProducerTransaction, args ...any) error {
	return p.publishAsync(context.Background(), false, kindPUB, topic, 0, body, nil, doneChan, args)
}

// Flush waits until every publish accepted before it has its answer (or has
// failed), or until ctx ends. It returns nil, ctx's error, or ErrStopped.
// Results of async publishes may still be on their way to their doneChan.
func (p *Producer) Flush(ctx context.Context) error {
	tx := getSyncTx()
	tx.kind = kindBarrier
	return p.do(ctx, tx)
}
