package nsq

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// instCount numbers producers, for their log lines.
var instCount atomic.Int64

// Producer publishes to one nsqd. It connects lazily, on the first publish,
// and reconnects after a failure; it is safe for concurrent use.
//
// Every publish it accepts completes exactly once, with nsqd's answer: see
// the package documentation for what each error means.
//
// The Producer is the callers' side: it checks a publish, takes room for it
// under the pending limits and hands it to its router (router.go), which
// owns the connection and everything after. The two share only what is
// safe for concurrent use: the channels below, the limits and the stats.
type Producer struct {
	addr   string
	config Config // read-only after NewProducer; the router and its Conns read it too

	logs logSink

	// mu guards stopped. A call holds it for reading while it hands a
	// transaction to the router, so once Stop has set stopped under the
	// write lock no transaction can arrive that the router will not see.
	mu      sync.RWMutex
	stopped bool

	startOnce sync.Once   // starts the router
	started   atomic.Bool // the router was started

	limit pendingLimit // Config.MaxPending and MaxPendingBytes
	// The backlog of results waiting for each doneChan nobody reads (a
	// courier carries them), bounded like limit: publishers to such a
	// channel wait for it, others do not. Written by the router:
	// chan *ProducerTransaction -> *pendingLimit.
	backlogs sync.Map
	learned  learnedLimits // nsqd's size limits, from its error texts
	stats    producerStats // behind Stats
	hook     txHook        // set by a ProducerPool on its node's Producer before any publish; else nil

	transactionChan chan *ProducerTransaction // accepted publishes, to the router
	withdrawChan    chan *ProducerTransaction // sync publishes whose context ended, to the router
	stopChan        chan struct{}             // closed by Stop
	exitChan        chan struct{}             // closed when the router has exited
}

// NewProducer returns a Producer for the nsqd TCP address addr. config is
// validated and copied: later changes to it have no effect. Nothing connects
// until the first publish (or Ping).
func NewProducer(addr string, config *Config) (*Producer, error) {
	if config == nil {
		return nil, errors.New("nsq: NewProducer needs a Config from NewConfig, got nil")
	}
	config.assertInitialized()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	p := &Producer{
		addr:            addr,
		config:          *config,
		transactionChan: make(chan *ProducerTransaction, 1024),
		withdrawChan:    make(chan *ProducerTransaction),
		stopChan:        make(chan struct{}),
		exitChan:        make(chan struct{}),
	}
	p.logs.id, p.logs.addr = instCount.Add(1), addr
	p.logs.set(log.New(os.Stderr, "", log.Flags()), LogLevelInfo)
	p.limit.init(int64(p.config.MaxPending), p.config.MaxPendingBytes)
	p.stats.epoch = time.Now()
	return p, nil
}

// String returns the nsqd address given to NewProducer.
func (p *Producer) String() string { return p.addr }

// Publish publishes body to topic and waits for nsqd's answer. body may be
// reused once Publish returns.
func (p *Producer) Publish(topic string, body []byte) error {
	return p.publishSync(context.Background(), kindPUB, topic, 0, body, nil)
}

// MultiPublish publishes bodies to topic in one MPUB command, and waits for
// nsqd's answer. The bodies may be reused once it returns. On success all
// of them are stored; when nsqd refuses them (ErrProtocol), none is; after
// nsqd's E_MPUB_FAILED (ErrUnknownOutcome) some may be. With
// Config.AutoBatch, publishes to topic queued beside it may share its MPUB
// (their messages in order, each call keeping its own result).
func (p *Producer) MultiPublish(topic string, body [][]byte) error {
	return p.publishSync(context.Background(), kindMPUB, topic, 0, nil, body)
}

// DeferredPublish publishes body to topic, to be delivered to consumers no
// earlier than delay from now (milliseconds are the unit nsqd takes), and
// waits for nsqd's answer. body may be reused once it returns.
func (p *Producer) DeferredPublish(topic string, delay time.Duration, body []byte) error {
	return p.publishSync(context.Background(), kindDPUB, topic, delay, body, nil)
}

// PublishAsync publishes body to topic without waiting. Once nsqd has
// answered (or the publish has failed), a *ProducerTransaction carrying the
// result and args is sent on doneChan; with a nil doneChan the result is
// dropped. Results sent to one doneChan arrive in the order the publishes
// were made. body must not be modified until the result arrives.
//
// PublishAsync waits while Config.MaxPending publishes (or
// Config.MaxPendingBytes) await their answers, and while as many results
// wait for doneChan to be read: a doneChan nobody reads holds back only its
// own publishers.
//
// An error returned here (invalid input, ErrStopped) means the publish was
// not accepted and nothing will be sent on doneChan.
func (p *Producer) PublishAsync(topic string, body []byte, doneChan chan *ProducerTransaction, args ...any) error {
	return p.publishAsync(context.Background(), true, kindPUB, topic, 0, body, nil, doneChan, args)
}

// MultiPublishAsync is the asynchronous MultiPublish: see PublishAsync. The
// bodies are copied, so they may be reused once it returns.
func (p *Producer) MultiPublishAsync(topic string, body [][]byte, doneChan chan *ProducerTransaction, args ...any) error {
	return p.publishAsync(context.Background(), true, kindMPUB, topic, 0, nil, body, doneChan, args)
}

// DeferredPublishAsync is the asynchronous DeferredPublish: see PublishAsync.
func (p *Producer) DeferredPublishAsync(topic string, delay time.Duration, body []byte, doneChan chan *ProducerTransaction, args ...any) error {
	return p.publishAsync(context.Background(), true, kindDPUB, topic, delay, body, nil, doneChan, args)
}

// Ping connects to nsqd if there is no connection, and sends it a NOP. It
// returns nil once the NOP is written (nsqd never answers NOP), or the error
// that kept it from being written.
func (p *Producer) Ping() error {
	tx := getSyncTx()
	tx.kind = kindNOP
	return p.do(context.Background(), tx)
}

// Stop stops the producer, permanently. Publishes made after Stop begins
// return ErrStopped. Stop waits for nsqd's answers to every publish already
// accepted, and for their results to be taken from their doneChans, for at
// most Config.StopTimeout; what is still unanswered then fails with
// ErrUnknownOutcome (written) or ErrNeverSent (not written). Then it closes
// the connection. When Stop returns, every accepted publish has completed
// and the producer's goroutines have exited. A second call, concurrent or
// later, waits for the same end and returns with the first.
func (p *Producer) Stop() {
	p.mu.Lock()
	first := !p.stopped
	p.stopped = true
	p.mu.Unlock()
	if first {
		close(p.stopChan)
	}
	// No router can start once stopped is set: started is final here.
	if p.started.Load() {
		<-p.exitChan
	}
}

// SetLogger sets the logger for every level, and the lowest level logged.
// A nil logger silences the producer.
func (p *Producer) SetLogger(l logger, lvl LogLevel) { p.logs.set(l, lvl) }

// SetLoggerForLevel sets the logger for one level.
func (p *Producer) SetLoggerForLevel(l logger, lvl LogLevel) { p.logs.setForLevel(l, lvl) }

// SetLoggerLevel sets the lowest level logged.
func (p *Producer) SetLoggerLevel(lvl LogLevel) { p.logs.setLevel(lvl) }

// publishSync validates a publish, hands it to the router and waits.
func (p *Producer) publishSync(ctx context.Context, kind txKind, topic string, delay time.Duration, body []byte, bodies [][]byte) error {
	size, err := p.check(kind, topic, delay, body, bodies)
	if err != nil {
		p.stats.refused.Add(1)
		return err
	}
	tx := getSyncTx()
	tx.kind, tx.topic, tx.delay, tx.body, tx.bodies, tx.size = kind, topic, delay, body, bodies, size
	if ctx.Done() != nil {
		tx.ctx = ctx // not sent once it is done
	}
	return p.do(ctx, tx)
}

// publishAsync validates a publish and hands it to the router; wait says
// whether to wait for room under the pending limits (until ctx ends) or to
// return ErrPendingFull at once.
func (p *Producer) publishAsync(ctx context.Context, wait bool, kind txKind, topic string, delay time.Duration, body []byte, bodies [][]byte,
	doneChan chan *ProducerTransaction, args []any) error {
	size, err := p.check(kind, topic, delay, body, bodies)
	if err != nil {
		p.stats.refused.Add(1)
		return err
	}
	recycled := kind == kindMPUB
	if recycled {
		// go-nsq copies MultiPublishAsync's bodies at the call; callers
		// rely on it. The copy goes back to mpubBodies once the publish
		// has completed.
		body, bodies = appendMPUBBody(mpubBodies.get(size), bodies), nil
	}
	// The context bounds the wait to enqueue only: the transaction is not
	// tied to it.
	tx := &ProducerTransaction{Args: args, doneChan: doneChan, kind: kind, topic: topic, delay: delay, body: body, size: size, recycled: recycled}
	if err := p.enqueue(ctx, wait, tx); err != nil {
		if recycled {
			mpubBodies.put(body)
		}
		return err
	}
	return nil
}

// do runs a sync transaction: enqueue, wait, recycle.
func (p *Producer) do(ctx context.Context, tx *ProducerTransaction) error {
	if err := p.enqueue(ctx, true, tx); err != nil {
		putSyncTx(tx)
		return err
	}
	select {
	case <-tx.doneChan:
	case <-ctx.Done(): // nil, never ready, for a call without a context
		if tx.kind == kindBarrier {
			// A Flush leaves its barrier behind: it completes on its own,
			// and the router never recycles it, so it is left to the GC.
			return &ctxError{ctx: ctx}
		}
		// The router answers with what it knows: not sent (and now never
		// will be), or written. It answers once the write goroutine is
		// done with the body, which the caller may then reuse. It may
		// still hold tx afterwards (or be reading it, when the result came
		// first): tx is left to the GC.
		select {
		case p.withdrawChan <- tx:
			<-tx.doneChan
			return tx.Error
		case <-tx.doneChan: // completed meanwhile
		}
	}
	err := tx.Error
	putSyncTx(tx)
	return err
}

// enqueue takes room for tx under the pending limits, waiting for it (until
// ctx ends or Stop) if wait is set, and hands tx to the router.
func (p *Producer) enqueue(ctx context.Context, wait bool, tx *ProducerTransaction) error {
	if wait && ctx.Err() != nil {
		return ctx.Err()
	}
	if err := p.takeRoom(ctx, wait, tx); err != nil {
		return err
	}
	p.mu.RLock()
	if p.stopped {
		p.mu.RUnlock()
		if tx.holdsRoom() {
			p.limit.release(room(tx))
		}
		return ErrStopped
	}
	p.startOnce.Do(p.start)
	p.transactionChan <- tx
	p.mu.RUnlock()
	return nil
}

// takeRoom takes room for tx under the producer's pending limits, once
// there is room in its doneChan's backlog (when results wait for that
// channel), waiting for both if wait is set.
func (p *Producer) takeRoom(ctx context.Context, wait bool, tx *ProducerTransaction) error {
	if !tx.holdsRoom() {
		return nil // Ping and Flush must work when the limit is reached
	}
	for {
		backlog := p.backlog(tx)
		if backlog != nil {
			// Results wait for this doneChan: its publishers wait too.
			if err := backlog.waitFits(ctx, tx.size, p.stopChan, wait); err != nil {
				return p.refused(err)
			}
		}
		if !wait {
			if !p.limit.tryAcquire(tx.size) {
				return p.refused(ErrPendingFull)
			}
		} else if err := p.limit.acquire(ctx, tx.size, p.stopChan); err != nil {
			return err
		}
		// While it waited for room, results may have begun to wait for
		// its doneChan.
		if b := p.backlog(tx); b == nil || b.fits(tx.size) {
			return nil
		}
		p.limit.release(room(tx))
	}
}

// backlog returns the backlog of results waiting for tx's doneChan, or nil.
func (p *Producer) backlog(tx *ProducerTransaction) *pendingLimit {
	if tx.doneChan == nil || tx.internal {
		return nil
	}
	if b, ok := p.backlogs.Load(tx.doneChan); ok {
		return b.(*pendingLimit)
	}
	return nil
}

// refused counts a publish refused for want of room; after Stop began the
// refusal is ErrStopped: retrying cannot help.
func (p *Producer) refused(err error) error {
	if err != ErrPendingFull {
		return err
	}
	if p.isStopped() {
		return ErrStopped
	}
	p.stats.refused.Add(1)
	return err
}

// isStopped reports whether Stop has begun.
func (p *Producer) isStopped() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.stopped
}

// check refuses, at the call, a publish that nsqd would reject (and that
// would take the shared connection down with it) or that breaks a limit the
// user configured. It returns the bytes the publish holds.
func (p *Producer) check(kind txKind, topic string, delay time.Duration, body []byte, bodies [][]byte) (int64, error) {
	if !isValidName(topic) {
		return 0, fmt.Errorf("%w %q: want 1 to 64 characters of [.a-zA-Z0-9_-], optionally followed by #ephemeral", ErrInvalidTopic, topic)
	}
	switch kind {
	case kindDPUB:
		if delay < 0 || delay > p.config.MaxDeferredDelay {
			return 0, fmt.Errorf("%w: %s is outside [0, %s] (max_deferred_delay)", ErrInvalidDelay, delay, p.config.MaxDeferredDelay)
		}
		fallthrough
	case kindPUB:
		return int64(len(body)), p.checkBody(body, -1)
	}
	if len(bodies) == 0 {
		return 0, fmt.Errorf("%w: MultiPublish needs at least one body", ErrEmptyBody)
	}
	for i, b := range bodies {
		if err := p.checkBody(b, i); err != nil {
			return 0, err
		}
	}
	size := mpubBodySize(bodies)
	if size > math.MaxUint32 {
		return 0, fmt.Errorf("%w: MPUB body of %d bytes does not fit the protocol's 4-byte size", ErrTooLarge, size)
	}
	if max := p.config.MaxBodySize; max > 0 && size > max {
		return 0, fmt.Errorf("%w: MPUB body of %d bytes is over max_body_size (%d)", ErrTooLarge, size, max)
	}
	if max := p.learned.maxBody.Load(); max > 0 && size > max {
		return 0, learnedTooBig("MPUB body", size, "--max-body-size", max)
	}
	return size, nil
}

// checkBody checks one body; i is its index in a MultiPublish, or -1.
func (p *Producer) checkBody(body []byte, i int) error {
	which := func() string {
		if i >= 0 {
			return fmt.Sprintf("body %d", i)
		}
		return "message body"
	}
	if len(body) == 0 {
		return fmt.Errorf("%w: %s is empty (nsqd refuses empty messages)", ErrEmptyBody, which())
	}
	if int64(len(body)) > math.MaxUint32 {
		return fmt.Errorf("%w: %s of %d bytes does not fit the protocol's 4-byte size", ErrTooLarge, which(), len(body))
	}
	if max := p.config.MaxMsgSize; max > 0 && int64(len(body)) > max {
		return fmt.Errorf("%w: %s of %d bytes is over max_msg_size (%d)", ErrTooLarge, which(), len(body), max)
	}
	if max := p.learned.maxMsg.Load(); max > 0 && int64(len(body)) > max {
		return learnedTooBig(which(), int64(len(body)), "--max-msg-size", max)
	}
	return nil
}

// ctxError is the error of a context call whose context ended before
// nsqd answered. class says what happened to the publish: ErrNeverSent
// (not written, and now never sent), ErrUnknownOutcome (written: it may
// still succeed), or nil (a Flush, which sends nothing).
type ctxError struct {
	ctx   context.Context
	class error
}

func (e *ctxError) Error() string {
	var what string
	switch e.class {
	case ErrNeverSent:
		what = "nsq: context ended before the publish was written; it is not sent: "
	case ErrUnknownOutcome:
		what = "nsq: context ended after the publish was written, before nsqd answered; it may still succeed: "
	default:
		what = "nsq: stopped waiting: "
	}
	return what + context.Cause(e.ctx).Error()
}

// Unwrap returns the class, the context's error and, when it differs, the
// cause the context was cancelled with.
func (e *ctxError) Unwrap() []error {
	errs := make([]error, 0, 3)
	if e.class != nil {
		errs = append(errs, e.class)
	}
	errs = append(errs, e.ctx.Err())
	if cause := context.Cause(e.ctx); cause != e.ctx.Err() {
		errs = append(errs, cause)
	}
	return errs
}

// start launches the router; it runs until Stop. Called once, under mu
// held for reading and with stopped unset.
func (p *Producer) start() {
	p.started.Store(true)
	r := newRouter(p)
	go r.run()
}

// learnedLimits holds nsqd's size limits as its error texts revealed them
// ("E_BAD_MESSAGE PUB message too big 2000 > 1024"); 0 while unknown. nsqd
// does not announce them, and a publish over them costs the connection (and
// the commands pipelined on it), so publishes over them are refused at the
// call until the next connection: that one may reach an nsqd restarted with
// other limits, or another nsqd behind the same address. The router writes
// them; the publishing calls read them.
type learnedLimits struct {
	maxMsg  atomic.Int64 // --max-msg-size
	maxBody atomic.Int64 // --max-body-size
}

// learnedTooBig is the error of a publish over a limit nsqd stated: which
// (of size bytes) is over nsqd's flag, max.
func learnedTooBig(which string, size int64, flag string, max int64) error {
	return fmt.Errorf("%w: %s of %d bytes is over nsqd's %s (%d, as nsqd stated on the last connection)", ErrTooLarge, which, size, flag, max)
}
