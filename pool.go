package nsq

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Publisher is the publishing API that [Producer] and [ProducerPool] share:
// code written against it takes either. Both satisfy it with the same
// meaning for every method; what differs is the order of results (see
// ProducerPool).
type Publisher interface {
	Publish(topic string, body []byte) error
	MultiPublish(topic string, body [][]byte) error
	DeferredPublish(topic string, delay time.Duration, body []byte) error
	PublishAsync(topic string, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error
	MultiPublishAsync(topic string, body [][]byte, doneChan chan *ProducerTransaction, args ...interface{}) error
	DeferredPublishAsync(topic string, delay time.Duration, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error
	PublishContext(ctx context.Context, topic string, body []byte) error
	MultiPublishContext(ctx context.Context, topic string, body [][]byte) error
	DeferredPublishContext(ctx context.Context, topic string, delay time.Duration, body []byte) error
	PublishAsyncContext(ctx context.Context, topic string, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error
	MultiPublishAsyncContext(ctx context.Context, topic string, body [][]byte, doneChan chan *ProducerTransaction, args ...interface{}) error
	DeferredPublishAsyncContext(ctx context.Context, topic string, delay time.Duration, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error
	TryPublishAsync(topic string, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error
	Flush(ctx context.Context) error
	Stop()
}

// poolWindowBatches is how many automatic batches (Config.MaxBatchMessages
// messages, Config.MaxBatchBytes bytes) one node may hold handed to it and
// unanswered: enough for its Producer to keep two batches in flight and
// form the next, few enough that a node that stops answering strands little
// and that publishes not yet handed to a node can still go elsewhere.
const poolWindowBatches = 3

// errPoolStopTimeout is why publishes the pool still holds when
// Config.StopTimeout runs out in Stop fail.
var errPoolStopTimeout = errors.New("nsq: ProducerPool.Stop gave up waiting (stop_timeout)")

// errNoNodes is why a publish fails when the pool has no node at all.
var errNoNodes = errors.New("nsq: the ProducerPool has no nsqd (none given, none found by nsqlookupd)")

var poolCount atomic.Int64

// ProducerPool publishes to many nsqd, each through its own [Producer]: a
// static list given to [NewProducerPool], or the nodes nsqlookupd knows
// ([ProducerPool.ConnectToNSQLookupd]). It has every publishing method of
// Producer, with the same signatures and meaning (see [Publisher]), and is
// safe for concurrent use.
//
// Publishes wait in one queue and each node takes the next ones when it has
// room: a node holds at most three automatic batches handed to it and
// unanswered (3 × Config.MaxBatchMessages messages, 3 ×
// Config.MaxBatchBytes bytes). So a stream spreads by speed over the nodes
// that are up, each node's Producer still batches what it holds into MPUBs,
// a slow node takes less, and a node that stops answering holds at most
// that much while the rest goes elsewhere.
//
// Failover keeps outcomes true. A publish that never reached a node
// ([ErrNeverSent]: the node could not be connected, or was removed; or
// nsqd's E_PUB_FAILED / E_DPUB_FAILED for a single message, which stored
// nothing) is given to another node, up to Config.PoolMaxAttempts nodes and
// while the caller's context lasts; the caller sees ErrNeverSent only when
// no node could take it. A publish that may be stored ([ErrUnknownOutcome],
// including nsqd's E_MPUB_FAILED) is never sent again, and one nsqd refused
// ([ErrProtocol]) is not retried elsewhere.
//
// A node is connected when it joins the pool (once the pool has started:
// see NewProducerPool) and takes publishes only once connected. A node that fails to connect is down: it takes nothing while
// its Producer retries with backoff and jitter (Config.ReconnectBackoff up
// to Config.MaxReconnectBackoff). After an unknown outcome a node takes
// nothing until it has connected again. When no node is up, queued
// publishes fail with ErrNeverSent at the next failed connection attempt:
// within Config.DialTimeout plus Config.MaxReconnectBackoff.
//
// Order: results are delivered exactly once each, but a pool gives no order
// across nodes. Publishes handed to one node are sent, and their results
// delivered, in the order the pool accepted them; publishes that went to
// different nodes complete in whatever order the nodes answer, and a
// publish moved after a failure completes after later ones. Where order
// matters per key, [ProducerPool.PublishByKey] sends one key to one node.
//
// Sync publishes run on the caller's goroutine through the node's Producer
// and allocate nothing. Async publishes wait in the pool's queue; each
// node's Producer takes its share of them itself, once per pass of its
// router's loop, and its results are settled and handed to their doneChans
// from that loop, a batch at a time. Discovery through nsqlookupd:
// [ProducerPool.ConnectToNSQLookupd].
type ProducerPool struct {
	id         int64
	config     Config // validated copy; every node's Producer gets a copy
	window     int    // messages a node may hold handed to it and unanswered
	windowSize int64  // bytes of them

	limit pendingLimit // Config.MaxPending, MaxPendingBytes: accepted, not yet delivered

	logs logSink // the pool's loggers; every node's Producer logs through them

	mu       sync.Mutex
	nodes    []*poolNode          // guarded by mu: every node, in the order added
	byAddr   map[string]*poolNode // guarded by mu
	queue    poolQueue            // guarded by mu: accepted, not handed to a node, oldest first
	retryQ   poolQueue            // guarded by mu: to be handed to another node, before queue
	started  bool                 // guarded by mu: the nodes' goroutines run (see start)
	stopped  bool                 // guarded by mu: Stop was called
	closing  bool                 // guarded by mu: nodes are stopping; nothing moves any more
	expired  bool                 // guarded by mu: Stop's deadline passed
	held     int                  // guarded by mu: messages handed to nodes, not settled
	lastErr  error                // guarded by mu: why a node last went down
	rr       int                  // guarded by mu: where the next node search starts
	epoch    uint64               // guarded by mu: publishes accepted since the last Flush belong to it
	open     []epochCount         // guarded by mu: unfinished publishes by epoch, oldest first
	flushers []poolFlusher        // guarded by mu
	idle     chan struct{}        // guarded by mu: closed once stopping with nothing queued or held

	lookupd poolLookupd
	live    atomic.Bool // started is set

	free  []*poolTx              // guarded by mu: blank async poolTxs (at most poolFreeMax)
	spare atomic.Pointer[poolTx] // a blank async poolTx enqueue took from free for the next call, or nil

	cmu      sync.Mutex
	couriers map[chan *ProducerTransaction]*poolCourier // guarded by cmu
	backlogs sync.Map                                   // each courier's doneChan -> its backlog (*pendingLimit); written under cmu

	stats poolStats

	stopOnce    sync.Once
	stopChan    chan struct{}  // closed by Stop
	abandonChan chan struct{}  // closed when Stop stops waiting for doneChans
	doneChan    chan struct{}  // closed when Stop has finished
	wg          sync.WaitGroup // the nodes' goroutines
}

// poolFlusher is a Flush waiting for every publish of epochs up to epoch.
type poolFlusher struct {
	epoch uint64
	done  chan struct{}
}

// NewProducerPool returns a pool for the nsqd TCP addresses addrs (which may
// be empty when the nodes come from nsqlookupd; duplicates are ignored).
// config is validated and copied; each node gets a Producer with a copy of
// it. The pool connects to every node in the background, starting at the
// first call of a publishing method, Flush, SetLogger, SetLoggerForLevel or
// SetLoggerLevel: so a logger set right after NewProducerPool gets every
// line of the pool and its nodes.
func NewProducerPool(addrs []string, config *Config) (*ProducerPool, error) {
	if config == nil {
		return nil, errors.New("nsq: NewProducerPool needs a Config from NewConfig, got nil")
	}
	config.assertInitialized()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if a == "" {
			return nil, errors.New("nsq: NewProducerPool: empty nsqd address")
		}
	}
	p := &ProducerPool{
		id:          poolCount.Add(1),
		config:      *config,
		byAddr:      map[string]*poolNode{},
		stopChan:    make(chan struct{}),
		abandonChan: make(chan struct{}),
		doneChan:    make(chan struct{}),
	}
	p.window = min(poolWindowBatches*p.config.MaxBatchMessages, p.config.MaxPending)
	p.windowSize = min(int64(poolWindowBatches*p.config.MaxBatchBytes), p.config.MaxPendingBytes)
	p.limit.init(int64(p.config.MaxPending), p.config.MaxPendingBytes)
	p.logs.id, p.logs.addr = p.id, "pool"
	p.logs.set(log.New(os.Stderr, "", log.Flags()), LogLevelInfo)
	p.mu.Lock()
	for _, a := range addrs {
		p.addNodeLocked(a, true)
	}
	p.mu.Unlock()
	return p, nil
}

// String returns the pool's nsqd addresses.
func (p *ProducerPool) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := "ProducerPool["
	for i, n := range p.nodes {
		if i > 0 {
			s += " "
		}
		s += n.addr
	}
	return s + "]"
}

// Publish publishes body to topic on one node and waits for its answer:
// see [Producer.Publish].
func (p *ProducerPool) Publish(topic string, body []byte) error {
	return p.publishSync(context.Background(), poolPUB, topic, 0, body, nil)
}

// MultiPublish publishes bodies to topic in one MPUB on one node, stored
// all or none: see [Producer.MultiPublish].
func (p *ProducerPool) MultiPublish(topic string, body [][]byte) error {
	return p.publishSync(context.Background(), poolMPUB, topic, 0, nil, body)
}

// DeferredPublish publishes body to topic on one node, for delivery after
// delay: see [Producer.DeferredPublish].
func (p *ProducerPool) DeferredPublish(topic string, delay time.Duration, body []byte) error {
	return p.publishSync(context.Background(), poolDPUB, topic, delay, body, nil)
}

// PublishAsync publishes body to topic without waiting: see
// [Producer.PublishAsync]. Results of publishes that went to different
// nodes arrive in the order the nodes answered (see ProducerPool).
func (p *ProducerPool) PublishAsync(topic string, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error {
	return p.publishAsync(context.Background(), poolPUB, topic, 0, body, nil, doneChan, args)
}

// MultiPublishAsync is the asynchronous MultiPublish: see
// [Producer.MultiPublishAsync]. The bodies are copied.
func (p *ProducerPool) MultiPublishAsync(topic string, body [][]byte, doneChan chan *ProducerTransaction, args ...interface{}) error {
	return p.publishAsync(context.Background(), poolMPUB, topic, 0, nil, body, doneChan, args)
}

// DeferredPublishAsync is the asynchronous DeferredPublish: see
// [Producer.DeferredPublishAsync].
func (p *ProducerPool) DeferredPublishAsync(topic string, delay time.Duration, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error {
	return p.publishAsync(context.Background(), poolDPUB, topic, delay, body, nil, doneChan, args)
}

// PublishContext is Publish bounded by ctx: see [Producer.PublishContext].
// A publish still waiting for a node when ctx ends is never sent, and the
// error satisfies both errors.Is(err, ctx.Err()) and errors.Is(err,
// ErrNeverSent); one already handed to a node ends as that node's Producer
// says: ErrNeverSent if it was withdrawn before it was written,
// ErrUnknownOutcome if it was written (it may be stored), beside ctx's error.
func (p *ProducerPool) PublishContext(ctx context.Context, topic string, body []byte) error {
	return p.publishSync(ctx, poolPUB, topic, 0, body, nil)
}

// MultiPublishContext is MultiPublish bounded by ctx: see PublishContext.
func (p *ProducerPool) MultiPublishContext(ctx context.Context, topic string, body [][]byte) error {
	return p.publishSync(ctx, poolMPUB, topic, 0, nil, body)
}

// DeferredPublishContext is DeferredPublish bounded by ctx: see
// PublishContext.
func (p *ProducerPool) DeferredPublishContext(ctx context.Context, topic string, delay time.Duration, body []byte) error {
	return p.publishSync(ctx, poolDPUB, topic, delay, body, nil)
}

// PublishAsyncContext is PublishAsync whose wait for room under
// Config.MaxPending is bounded by ctx: see [Producer.PublishAsyncContext].
// Once accepted, the publish is no longer tied to ctx.
func (p *ProducerPool) PublishAsyncContext(ctx context.Context, topic string, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error {
	return p.publishAsync(ctx, poolPUB, topic, 0, body, nil, doneChan, args)
}

// MultiPublishAsyncContext is MultiPublishAsync with PublishAsyncContext's
// bounded wait.
func (p *ProducerPool) MultiPublishAsyncContext(ctx context.Context, topic string, body [][]byte, doneChan chan *ProducerTransaction, args ...interface{}) error {
	return p.publishAsync(ctx, poolMPUB, topic, 0, nil, body, doneChan, args)
}

// DeferredPublishAsyncContext is DeferredPublishAsync with
// PublishAsyncContext's bounded wait.
func (p *ProducerPool) DeferredPublishAsyncContext(ctx context.Context, topic string, delay time.Duration, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error {
	return p.publishAsync(ctx, poolDPUB, topic, delay, body, nil, doneChan, args)
}

// TryPublishAsync is PublishAsync that never waits for room: see
// [Producer.TryPublishAsync].
func (p *ProducerPool) TryPublishAsync(topic string, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error {
	return p.publishAsync(poolTryContext{context.Background()}, poolPUB, topic, 0, body, nil, doneChan, args)
}

// Flush waits until every publish the pool accepted before it has its final
// result (on whichever node, after any move), or until ctx ends. It returns
// nil, ctx's error, or ErrStopped. Results of async publishes may still be
// on their way to their doneChan.
func (p *ProducerPool) Flush(ctx context.Context) error {
	p.start()
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return ErrStopped
	}
	e := p.epoch
	p.epoch++
	if p.flushedLocked(e) {
		p.mu.Unlock()
		return nil
	}
	f := poolFlusher{epoch: e, done: make(chan struct{})}
	p.flushers = append(p.flushers, f)
	p.mu.Unlock()
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flushedLocked reports whether every publish of epochs up to e is finished.
func (p *ProducerPool) flushedLocked(e uint64) bool {
	return len(p.open) == 0 || p.open[0].epoch > e
}

// epochCount is how many publishes of one epoch are unfinished.
type epochCount struct {
	epoch uint64
	n     int
}

// openLocked counts a publish accepted in the current epoch.
func (p *ProducerPool) openLocked() {
	if k := len(p.open); k > 0 && p.open[k-1].epoch == p.epoch {
		p.open[k-1].n++
		return
	}
	p.open = append(p.open, epochCount{p.epoch, 1})
}

// closeLocked counts a publish of epoch e finished, and reports whether
// that was the epoch's last.
func (p *ProducerPool) closeLocked(e uint64) bool {
	for i := range p.open {
		if p.open[i].epoch != e {
			continue
		}
		if p.open[i].n--; p.open[i].n > 0 {
			return false
		}
		p.open = append(p.open[:i], p.open[i+1:]...)
		return true
	}
	if invariantPanics {
		panic("nsq: a pool publish finished in an epoch with none open")
	}
	return false
}

// Stop stops the pool, permanently. Publishes made after Stop begins return
// ErrStopped. Stop waits up to Config.StopTimeout for everything accepted to
// be handed to a node and answered (moving what never reached a node, as
// before); what is still queued then fails with ErrNeverSent. Then it stops
// every node's Producer (each waits for what it holds, up to StopTimeout,
// see [Producer.Stop]) and waits for results to be taken from their
// doneChans until twice StopTimeout has passed. When Stop returns, every
// accepted publish has completed and no goroutine of the pool is left.
// Calling Stop again waits for the first call to finish.
func (p *ProducerPool) Stop() {
	first := false
	p.stopOnce.Do(func() { first = true })
	if !first {
		<-p.doneChan
		return
	}
	defer close(p.doneChan)
	start := time.Now()
	deadline := start.Add(p.config.StopTimeout)
	p.mu.Lock()
	p.stopped = true
	p.idle = make(chan struct{})
	p.checkIdleLocked()
	idle := p.idle
	p.mu.Unlock()
	close(p.stopChan)
	p.lookupd.stop()

	timer := time.NewTimer(time.Until(deadline))
	select {
	case <-idle:
	case <-timer.C:
		p.log(LogLevelWarning, "stop_timeout (%s): publishes still unanswered", p.config.StopTimeout)
	}
	timer.Stop()

	p.mu.Lock()
	p.closing = true
	p.expired = !time.Now().Before(deadline)
	for _, n := range p.nodes {
		n.removeLocked(p)
		if !n.launched {
			p.launchLocked(n) // it only leaves
		}
	}
	p.started = true
	out := p.failQueueLocked(neverSentf(errPoolStopTimeout))
	p.mu.Unlock()
	p.deliver(out)
	p.wg.Wait() // every node has stopped its Producer and settled what it held
	// Nothing finishes any more: only couriers may still run.

	p.cmu.Lock()
	var waits []chan struct{}
	for _, c := range p.couriers {
		waits = append(waits, c.exited)
	}
	p.cmu.Unlock()
	timer = time.NewTimer(time.Until(start.Add(2 * p.config.StopTimeout)))
	defer timer.Stop()
	for _, w := range waits {
		select {
		case <-w:
		case <-timer.C:
			close(p.abandonChan)
			for _, w := range waits {
				<-w
			}
			return
		}
	}
}

// SetLogger sets the logger for every level, and the lowest level logged,
// of the pool and of every node's Producer (theirs go through the pool's). A
// nil logger silences them.
func (p *ProducerPool) SetLogger(l logger, lvl LogLevel) {
	p.logs.set(l, lvl)
	p.start()
}

// SetLoggerForLevel sets the logger for one level, of the pool and of every
// node's Producer.
func (p *ProducerPool) SetLoggerForLevel(l logger, lvl LogLevel) {
	p.logs.setForLevel(l, lvl)
	p.start()
}

// SetLoggerLevel sets the lowest level logged, by the pool and by every
// node's Producer.
func (p *ProducerPool) SetLoggerLevel(lvl LogLevel) {
	p.logs.setLevel(lvl)
	p.start()
}

// poolLogForward is a node Producer's logger for one level: it writes
// through the pool's logger for that level, as the pool's settings are
// when the line is logged.
type poolLogForward struct {
	p   *ProducerPool
	lvl LogLevel
}

func (f poolLogForward) Output(calldepth int, s string) error {
	if l := f.p.logs.enabled(f.lvl); l != nil {
		return l.Output(calldepth+1, s)
	}
	return nil
}

// forwardLogs makes a node's Producer log through the pool's loggers.
func (p *ProducerPool) forwardLogs(pr *Producer) {
	for lvl := LogLevelDebug; lvl <= LogLevelMax; lvl++ {
		pr.SetLoggerForLevel(poolLogForward{p, lvl}, lvl)
	}
	pr.SetLoggerLevel(LogLevelDebug) // the pool's level filters
}

func (p *ProducerPool) log(lvl LogLevel, format string, args ...any) {
	p.logs.log(lvl, "(pool) "+format, args...)
}

// publishSync validates a publish, queues it, and, once the pool gives it
// a node, publishes it there from the caller's goroutine (so a sync
// publish costs what a Producer's does), moving it to another node while
// it never reaches one.
func (p *ProducerPool) publishSync(ctx context.Context, kind poolKind, topic string, delay time.Duration, body []byte, bodies [][]byte) error {
	t, err := p.newTx(getPoolSyncTx(), kind, topic, delay, body, bodies)
	if err != nil {
		return err
	}
	return p.runSync(ctx, t)
}

// runSync queues t and waits for its final result.
func (p *ProducerPool) runSync(ctx context.Context, t *poolTx) error {
	if ctx.Done() != nil {
		t.ctx = ctx
	}
	t.inline = true // given a node by its own enqueue: no wake-up
	if err := p.enqueue(ctx, t); err != nil {
		p.putSyncTx(t)
		return err
	}
	n := t.inlineNode
	for {
		if n == nil {
			select {
			case n = <-t.wake:
			case <-ctx.Done():
				return p.abandon(t)
			}
		}
		if n == nil {
			// Finished while waiting for a node (t.err was written before
			// the send).
			err := t.err
			p.putSyncTx(t)
			return err
		}
		err := n.publishSync(ctx, t)
		switch {
		case err == ErrStopped:
			// The node was removed after it was given this publish.
			err = neverSentf(fmt.Errorf("nsq: nsqd %s left the pool", n.addr))
		case errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrNeverSent):
			// Refused at the node Producer's call, over a limit nsqd
			// stated (the pool checked the configured ones): the pool
			// accepted it, and it reached no nsqd.
			err = neverSent(err)
		}
		var buf [4]*poolTx
		out := buf[:0]
		p.mu.Lock()
		if waited(ctx, err) {
			// The caller's context ended while the node's Producer had it:
			// the error says whether it may be stored.
			out = p.releaseLocked(n, t, err)
		} else {
			out = p.settleLocked(n, t, err, out)
		}
		p.dispatchLocked(nil)
		finished := t.finished
		p.mu.Unlock()
		if finished {
			// Delivered here rather than through t.wake.
			for i, o := range out {
				if o == t {
					out = append(out[:i], out[i+1:]...)
					break
				}
			}
			p.limit.release(1, t.size)
		}
		p.deliver(out)
		if finished {
			err := t.err
			p.putSyncTx(t)
			return err
		}
		n = nil
	}
}

// syncTxs recycles the poolTx of sync calls, with their wake channel.
var syncTxs = sync.Pool{New: func() any { return &poolTx{wake: make(chan *poolNode, 1)} }}

// getPoolSyncTx returns a blank sync poolTx.
func getPoolSyncTx() *poolTx { return syncTxs.Get().(*poolTx) }

// putSyncTx recycles t once its caller has its result. One abandoned while
// queued may still be in a queue: it is left to the GC.
func (p *ProducerPool) putSyncTx(t *poolTx) {
	if t.abandoned {
		return
	}
	wake := t.wake
	*t = poolTx{wake: wake}
	syncTxs.Put(t)
}

// abandon handles a sync caller whose context ended while its publish
// waited for a node: it is never sent.
func (p *ProducerPool) abandon(t *poolTx) error {
	var out []*poolTx
	p.mu.Lock()
	switch {
	case t.finished:
	case t.parked:
		// Given a node, waiting for the async publishes before it.
		n := t.node
		for i, u := range n.parked {
			if u == t {
				n.parked = append(n.parked[:i], n.parked[i+1:]...)
				break
			}
		}
		t.parked = false
		out = p.releaseLocked(n, t, neverSentCtx(t.ctx))
	case t.node != nil:
		// Given a node, not yet published there.
		<-t.wake
		out = p.releaseLocked(t.node, t, neverSentCtx(t.ctx))
	default:
		// Still queued: dispatch skips it (and may now pass it).
		t.abandoned = true
		out = append(out, p.finishLocked(t, neverSentCtx(t.ctx)))
	}
	p.dispatchLocked(nil)
	p.mu.Unlock()
	p.deliver(out)
	return t.err
}

// releaseLocked takes t back from n without a result from n, and finishes
// it with err.
func (p *ProducerPool) releaseLocked(n *poolNode, t *poolTx, err error) []*poolTx {
	n.held -= t.msgs
	n.heldSize -= t.size
	p.held -= t.msgs
	t.node = nil
	return []*poolTx{p.finishLocked(t, err)}
}

// waited reports whether err is a Producer's context call giving up because
// ctx ended: withdrawn before it was written (ErrNeverSent) or written and
// not answered (ErrUnknownOutcome), its outcome final either way. The
// caller's context says nothing of the node.
func waited(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err())
}

// publishAsync validates a publish and queues it.
func (p *ProducerPool) publishAsync(ctx context.Context, kind poolKind, topic string, delay time.Duration, body []byte, bodies [][]byte,
	doneChan chan *ProducerTransaction, args []interface{}) error {
	if kind == poolMPUB {
		// Copied at the call, as Producer.MultiPublishAsync does.
		cp := make([][]byte, len(bodies))
		for i, b := range bodies {
			cp[i] = append([]byte(nil), b...)
		}
		bodies = cp
	}
	t, err := p.newTx(p.getAsyncTx(), kind, topic, delay, body, bodies)
	if err != nil {
		return err
	}
	t.doneChan, t.args = doneChan, args
	return p.enqueueAsync(ctx, t)
}

// enqueueAsync is enqueue for an async publish, whose poolTx is recycled
// when it is not accepted.
func (p *ProducerPool) enqueueAsync(ctx context.Context, t *poolTx) error {
	if err := p.enqueue(ctx, t); err != nil {
		putAsyncTx(t)
		return err
	}
	return nil
}

// asyncTxs recycles the poolTx of async publishes: once its result is
// handed on, nothing refers to it.
var asyncTxs = sync.Pool{New: func() any { return new(poolTx) }}

// getAsyncTx returns a blank async poolTx: the one enqueue set aside from
// the pool's free list, or one from asyncTxs.
func (p *ProducerPool) getAsyncTx() *poolTx {
	if t := p.spare.Swap(nil); t != nil {
		return t
	}
	return asyncTxs.Get().(*poolTx)
}

// poolFreeMax is how many blank async poolTx a pool keeps for its callers:
// its nodes' hooks give back a batch of them under the lock they settle
// in, and enqueue sets one aside for the next call, which is cheaper than
// a sync.Pool's Get and Put per publish on two goroutines.
const poolFreeMax = 4096

func putAsyncTx(t *poolTx) {
	*t = poolTx{}
	asyncTxs.Put(t)
}

// PublishByKey is Publish to the node chosen for key: of the nodes that are
// up (and, while one that has not is up, have not tombstoned topic in
// nsqlookupd), the one whose rendezvous hash with key is highest. While no
// node joins, leaves, goes down or comes up, and no tombstone of topic
// comes or goes, every publish with one key goes to one node, so its
// publishes (and PublishAsyncByKey's, sync and async alike) are stored in
// the order they are made and complete in that order. When the key's node
// stops taking publishes, the key moves to its next node (a node that
// comes up or joins takes back only its own keys); a publish that never
// reached its node moves too. Publishes made around such a move may be
// stored out of order, never twice.
func (p *ProducerPool) PublishByKey(key, topic string, body []byte) error {
	t, err := p.newTx(getPoolSyncTx(), poolPUB, topic, 0, body, nil)
	if err != nil {
		return err
	}
	t.keyed, t.keyHash = true, hashKey(key)
	return p.runSync(context.Background(), t)
}

// PublishAsyncByKey is PublishAsync to the node chosen for key: see
// PublishByKey for what it guarantees about order. Results of one key
// arrive on doneChan in the order published while its node does not
// change.
func (p *ProducerPool) PublishAsyncByKey(key, topic string, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error {
	t, err := p.newTx(p.getAsyncTx(), poolPUB, topic, 0, body, nil)
	if err != nil {
		return err
	}
	t.keyed, t.keyHash = true, hashKey(key)
	t.doneChan, t.args = doneChan, args
	return p.enqueueAsync(context.Background(), t)
}

// newTx checks a publish as a Producer would, at the call.
func (p *ProducerPool) newTx(t *poolTx, kind poolKind, topic string, delay time.Duration, body []byte, bodies [][]byte) (*poolTx, error) {
	t.kind, t.topic, t.delay, t.body, t.bodies, t.msgs, t.size = kind, topic, delay, body, bodies, 1, int64(len(body))
	err := p.check(t)
	if err != nil {
		p.stats.refused.Add(1)
		if t.wake != nil {
			p.putSyncTx(t)
		}
		return nil, err
	}
	return t, nil
}

func (p *ProducerPool) check(t *poolTx) error {
	c := &p.config
	if !IsValidTopicName(t.topic) {
		return fmt.Errorf("%w %q: want 1 to 64 characters of [.a-zA-Z0-9_-], optionally followed by #ephemeral", ErrInvalidTopic, t.topic)
	}
	// checkBody checks body i of a MultiPublish, or the body when i < 0.
	checkBody := func(b []byte, i int) error {
		if len(b) > 0 && (c.MaxMsgSize <= 0 || int64(len(b)) <= c.MaxMsgSize) {
			return nil
		}
		what := "message body"
		if i >= 0 {
			what = fmt.Sprintf("body %d", i)
		}
		if len(b) == 0 {
			return fmt.Errorf("%w: %s is empty (nsqd refuses empty messages)", ErrEmptyBody, what)
		}
		return fmt.Errorf("%w: %s of %d bytes is over max_msg_size (%d)", ErrTooLarge, what, len(b), c.MaxMsgSize)
	}
	switch t.kind {
	case poolDPUB:
		if t.delay < 0 || t.delay > c.MaxDeferredDelay {
			return fmt.Errorf("%w: %s is outside [0, %s] (max_deferred_delay)", ErrInvalidDelay, t.delay, c.MaxDeferredDelay)
		}
		return checkBody(t.body, -1)
	case poolPUB:
		return checkBody(t.body, -1)
	}
	if len(t.bodies) == 0 {
		return fmt.Errorf("%w: MultiPublish needs at least one body", ErrEmptyBody)
	}
	size := int64(4)
	for i, b := range t.bodies {
		if err := checkBody(b, i); err != nil {
			return err
		}
		size += 4 + int64(len(b))
	}
	if c.MaxBodySize > 0 && size > c.MaxBodySize {
		return fmt.Errorf("%w: MPUB body of %d bytes is over max_body_size (%d)", ErrTooLarge, size, c.MaxBodySize)
	}
	t.msgs, t.size = len(t.bodies), size
	return nil
}

// poolTryContext marks a call that must not wait for room.
type poolTryContext struct{ context.Context }

// enqueue takes room under the pending limits, queues t and hands what it
// can to the nodes.
func (p *ProducerPool) enqueue(ctx context.Context, t *poolTx) error {
	p.start()
	if err := p.takeRoom(ctx, t); err != nil {
		return err
	}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		p.limit.release(1, t.size)
		return ErrStopped
	}
	t.epoch = p.epoch
	p.openLocked()
	var out []*poolTx
	if !p.lookupd.firstPending && !p.anyNodeLocked() {
		// None, or every one leaving: nothing will connect.
		out = append(out, p.finishLocked(t, neverSentf(errNoNodes)))
		p.mu.Unlock()
		p.deliver(out)
		return nil
	}
	// Whatever changes under mu that can let a waiting publish go (room
	// freed, a node up, a publish finished while queued) dispatches before
	// mu is released: so when publishes already wait, none of the nodes
	// can take the first of them, and t, behind it, need not be tried.
	waiting := p.queue.len()+p.retryQ.len() > 0
	p.queue.pushBack(t)
	if !waiting {
		p.dispatchLocked(nil)
	}
	if t.inline {
		// A sync publish given a node just now learns it here, not
		// through its wake channel.
		t.inline = false
		if !t.parked {
			t.inlineNode = t.node
		}
	}
	if k := len(p.free); k > 0 && p.spare.Load() == nil {
		p.spare.Store(p.free[k-1]) // for the next async call
		p.free[k-1] = nil
		p.free = p.free[:k-1]
	}
	p.mu.Unlock()
	return nil
}

// takeRoom takes room for t under the pool's pending limits, once there is
// room in its doneChan's backlog (when results wait for that channel in a
// courier), waiting for both unless ctx is a poolTryContext, as a
// Producer's publishing calls do: a doneChan nobody reads holds back only
// its own publishers.
func (p *ProducerPool) takeRoom(ctx context.Context, t *poolTx) error {
	_, try := ctx.(poolTryContext)
	if !try && ctx.Err() != nil {
		return ctx.Err()
	}
	refused := func(err error) error {
		if err != ErrPendingFull {
			return err
		}
		// After Stop began, no room is coming: the refusal is ErrStopped,
		// as a Producer's is.
		p.mu.Lock()
		stopped := p.stopped
		p.mu.Unlock()
		if stopped {
			return ErrStopped
		}
		p.stats.refused.Add(1)
		return err
	}
	for {
		if b := p.backlog(t.doneChan); b != nil {
			if err := b.waitFits(ctx, t.size, p.stopChan, !try); err != nil {
				return refused(err)
			}
		}
		if try {
			if !p.limit.tryAcquire(t.size) {
				return refused(ErrPendingFull)
			}
		} else if err := p.limit.acquire(ctx, t.size, p.stopChan); err != nil {
			return err
		}
		// While it waited for room, results may have begun to wait for
		// its doneChan.
		if b := p.backlog(t.doneChan); b == nil || b.fits(t.size) {
			return nil
		}
		p.limit.release(1, t.size)
	}
}

// backlog returns the backlog of the results waiting for ch in a courier,
// or nil.
func (p *ProducerPool) backlog(ch chan *ProducerTransaction) *pendingLimit {
	if ch == nil {
		return nil
	}
	if b, ok := p.backlogs.Load(ch); ok {
		return b.(*pendingLimit)
	}
	return nil
}

// dispatchLocked takes publishes from the front of the queues for the
// nodes that have room, in order: a sync caller is woken to publish its
// own, an async publish goes to the node's box, which its router takes
// (self is the node whose hook is dispatching, or nil).
func (p *ProducerPool) dispatchLocked(self *poolNode) {
	if p.closing {
		return
	}
	// Keyed publishes waiting for their node go first, in order.
	for _, n := range p.nodes {
		for n.state == nodeUp && n.keyQ.len() > 0 && n.hasRoom(p, n.keyQ.peek()) {
			if t := n.keyQ.popFront(); !t.finished {
				p.assignLocked(n, t, self)
			}
		}
	}
	for {
		q := &p.retryQ
		if q.len() == 0 {
			q = &p.queue
		}
		if q.len() == 0 {
			break
		}
		t := q.peek()
		if t.finished {
			q.popFront()
			continue
		}
		if t.keyed {
			n := p.keyNodeLocked(t)
			if n == nil {
				break // no node is up
			}
			q.popFront()
			if n.keyQ.len() > 0 || !n.hasRoom(p, t) {
				n.keyQ.pushBack(t) // behind the key's earlier publishes
				continue
			}
			p.assignLocked(n, t, self)
			continue
		}
		n := p.pickLocked(t)
		if n == nil {
			break
		}
		q.popFront()
		p.assignLocked(n, t, self)
	}
}

// assignLocked gives t to n: a sync caller is woken to publish it, an async
// publish goes to n's box.
func (p *ProducerPool) assignLocked(n *poolNode, t *poolTx, self *poolNode) {
	n.held += t.msgs
	n.heldSize += t.size
	p.held += t.msgs
	t.node = n
	t.attempts++
	if t.wake != nil {
		if len(n.box) > 0 {
			// Async publishes given to n before it wait in its box: the
			// caller publishes once n's router has taken them (see
			// takeBoxLocked), so that n sends them first.
			t.parked = true
			n.parked = append(n.parked, t)
			return
		}
		if !t.inline {
			t.wake <- n // the sync caller publishes it
		}
		return
	}
	n.giveLocked(t, self)
}

// keyNodeLocked returns the node for a keyed publish: of the nodes that are
// up, the one whose rendezvous hash with the key is highest (so a node
// coming or going moves only its own keys), skipping the node it just
// failed on while another is up, and one that tombstoned the topic while
// another that did not is up (as pickLocked does).
func (p *ProducerPool) keyNodeLocked(t *poolTx) *poolNode {
	var best *poolNode
	var bestScore uint64
	bestTomb := false
	for _, n := range p.nodes {
		if n.state != nodeUp || (n == t.last && len(p.nodes) > 1) {
			continue
		}
		tomb := len(n.tombstoned) > 0 && n.tombstoned[t.topic]
		score := rendezvous(t.keyHash, n.addr)
		if best == nil || (bestTomb && !tomb) || (tomb == bestTomb && score > bestScore) {
			best, bestScore, bestTomb = n, score, tomb
		}
	}
	if best == nil && t.last != nil && t.last.state == nodeUp {
		best = t.last
	}
	return best
}

// rendezvous mixes a key's hash with a node's address (FNV-1a, then a
// finalizer so that close addresses score far apart).
func rendezvous(keyHash uint64, addr string) uint64 {
	h := keyHash
	for i := 0; i < len(addr); i++ {
		h ^= uint64(addr[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

func hashKey(key string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	return h
}

// pickLocked returns the node to hand t to, or nil if none has room: the
// up node holding the fewest messages, preferring one that t has not just
// failed on, and never one that tombstoned t's topic while a node that did
// not is up.
func (p *ProducerPool) pickLocked(t *poolTx) *poolNode {
	k := len(p.nodes)
	if k == 1 {
		if n := p.nodes[0]; n.state == nodeUp && n.hasRoom(p, t) {
			return n
		}
		return nil
	}
	var best *poolNode
	bestScore := 0
	bestTomb, otherUp := false, false
	for i := range k {
		n := p.nodes[(p.rr+i)%k]
		if n.state != nodeUp {
			continue
		}
		tomb := len(n.tombstoned) > 0 && n.tombstoned[t.topic]
		otherUp = otherUp || !tomb
		if !n.hasRoom(p, t) {
			continue
		}
		score := n.held
		if tomb {
			score += 1 << 41 // above the next: a node up without the tombstone wins
		}
		if n == t.last {
			score += 1 << 40
		}
		if best == nil || score < bestScore {
			best, bestScore, bestTomb = n, score, tomb
		}
	}
	if bestTomb && otherUp {
		// A node that did not tombstone the topic is up: wait for its
		// room rather than publish where the topic is being drained.
		return nil
	}
	if best != nil {
		p.rr++
	}
	return best
}

// settleLocked records a node's result for t, and either finishes t (its
// final result; returned for delivery) or queues it for another node.
func (p *ProducerPool) settleLocked(n *poolNode, t *poolTx, err error, out []*poolTx) []*poolTx {
	n.held -= t.msgs
	n.heldSize -= t.size
	p.held -= t.msgs
	if invariantPanics && (n.held < 0 || p.held < 0 || t.finished || t.node != n) {
		panic(fmt.Sprintf("nsq: pool node %s settles a publish it does not hold (held %d, pool %d, finished %v)", n.addr, n.held, p.held, t.finished))
	}
	t.node = nil
	switch {
	case err == nil:
		n.published += uint64(t.msgs)
	case errors.Is(err, ErrUnknownOutcome):
		n.unknown += uint64(t.msgs)
		n.lastErr = err
		if n.state == nodeUp {
			// The connection died with this in flight: no new work until
			// the node has connected again.
			n.setStateLocked(p, nodeConnecting)
		}
	case movable(err):
		ctxDone := t.ctx != nil && t.ctx.Err() != nil
		if !ctxDone {
			n.neverSent += uint64(t.msgs)
			n.lastErr = err
		}
		if errors.Is(err, ErrNeverSent) && n.state == nodeUp && !p.closing && !ctxDone {
			// Its Producer failed to connect (a publish whose context
			// ended is not sent either: that says nothing of the node).
			p.lastErr = err
			n.setStateLocked(p, nodeDown)
			out = append(out, p.failIfHopelessLocked()...)
		}
		switch {
		case ctxDone:
			return append(out, p.finishLocked(t, neverSentCtx(t.ctx)))
		case p.closing || p.expired || int(t.attempts) >= p.config.PoolMaxAttempts:
			return append(out, p.finishLocked(t, err))
		case p.hopelessLocked():
			return append(out, p.finishLocked(t, err))
		}
		n.rerouted += uint64(t.msgs)
		p.stats.rerouted.Add(uint64(t.msgs))
		t.last = n
		p.retryQ.pushBack(t)
		p.checkIdleLocked()
		return out
	}
	return append(out, p.finishLocked(t, err))
}

// movable reports whether a node's error means the publish was not stored
// and may go to another node: it never reached nsqd, or nsqd failed to
// store a single message (E_PUB_FAILED, E_DPUB_FAILED). An MPUB's failure is
// an unknown outcome and never moves; input nsqd refused does not either.
func movable(err error) bool {
	if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrUnknownOutcome) {
		return false // over nsqd's learned limit: no node takes it
	}
	if errors.Is(err, ErrNeverSent) {
		return true
	}
	var perr ErrProtocol
	if errors.As(err, &perr) {
		code := perr.Code()
		return code == "E_PUB_FAILED" || code == "E_DPUB_FAILED"
	}
	return false
}

// finishLocked records t's final result and returns t for delivery (outside
// mu, by deliver).
func (p *ProducerPool) finishLocked(t *poolTx, err error) *poolTx {
	if invariantPanics && t.finished {
		panic("nsq: pool publish finished twice")
	}
	t.finished, t.err = true, err
	p.stats.count(t, err)
	if p.closeLocked(t.epoch) && len(p.flushers) > 0 {
		p.wakeFlushersLocked()
	}
	p.checkIdleLocked()
	return t
}

func (p *ProducerPool) wakeFlushersLocked() {
	kept := p.flushers[:0]
	for _, f := range p.flushers {
		if p.flushedLocked(f.epoch) {
			close(f.done)
		} else {
			kept = append(kept, f)
		}
	}
	clear(p.flushers[len(kept):])
	p.flushers = kept
}

// checkIdleLocked closes idle once Stop waits with nothing queued or held.
func (p *ProducerPool) checkIdleLocked() {
	if p.idle == nil || p.queuedLocked() > 0 || p.held > 0 {
		return
	}
	select {
	case <-p.idle:
	default:
		close(p.idle)
	}
}

// queuedLocked returns how many publishes wait for a node.
func (p *ProducerPool) queuedLocked() int {
	n := p.queue.len() + p.retryQ.len()
	for _, node := range p.nodes {
		n += node.keyQ.len()
	}
	return n
}

// anyNodeLocked reports whether the pool has a node that is not leaving.
func (p *ProducerPool) anyNodeLocked() bool {
	for _, n := range p.nodes {
		if n.state != nodeRemoved {
			return true
		}
	}
	return false
}

// hopelessLocked reports whether no node can take a publish soon: none is
// up or connecting for the first time (or again after an unknown outcome),
// and nsqlookupd has not answered yet.
func (p *ProducerPool) hopelessLocked() bool {
	if p.lookupd.firstPending {
		return false
	}
	for _, n := range p.nodes {
		if n.state == nodeUp || n.state == nodeConnecting {
			return false
		}
	}
	return true
}

// failIfHopelessLocked fails every queued publish when no node can take
// them soon.
func (p *ProducerPool) failIfHopelessLocked() []*poolTx {
	if p.queuedLocked() == 0 || !p.hopelessLocked() {
		return nil
	}
	cause := p.lastErr
	if cause == nil {
		cause = errNoNodes
	}
	p.log(LogLevelError, "no nsqd can take publishes: failing %d queued: %v", p.queuedLocked(), cause)
	if errors.Is(cause, ErrNeverSent) {
		return p.failQueueLocked(cause)
	}
	return p.failQueueLocked(neverSentf(cause))
}

// failQueueLocked fails everything queued with err.
func (p *ProducerPool) failQueueLocked(err error) []*poolTx {
	var out []*poolTx
	for _, q := range []*poolQueue{&p.retryQ, &p.queue} {
		for q.len() > 0 {
			if t := q.popFront(); !t.finished {
				out = append(out, p.finishLocked(t, err))
			}
		}
	}
	return out
}

// deliver hands finished publishes to their callers: a sync caller is
// woken; an async result goes to its doneChan at once when it has room,
// else through that channel's courier, which keeps results in order
// without blocking the pool.
func (p *ProducerPool) deliver(out []*poolTx) { p.deliverTo(out, nil) }

// deliverTo is deliver, which blanks the async poolTxs it is done with and
// appends them to free, or, when free is nil, puts them in asyncTxs.
func (p *ProducerPool) deliverTo(out []*poolTx, free *[]*poolTx) {
	recycle := func(t *poolTx) {
		if free == nil {
			putAsyncTx(t)
			return
		}
		*t = poolTx{}
		*free = append(*free, t)
	}
	var relCount, relBytes int64 // room freed, released at once
	locked := false
	var lastCh chan *ProducerTransaction // the doneChan of the result before, and its courier
	var lastC *poolCourier
	for _, t := range out {
		if t.wake != nil {
			p.limit.release(1, t.size)
			t.wake <- nil // capacity 1: nothing else is pending on it
			continue
		}
		if t.doneChan == nil {
			relCount, relBytes = relCount+1, relBytes+t.size
			recycle(t)
			continue
		}
		tx := t.result
		if tx == nil { // never handed to a node
			tx = &ProducerTransaction{}
		}
		tx.Error, tx.Args = t.err, t.args
		ch, size := t.doneChan, t.size
		recycle(t) // tx carries the result from here
		if !locked {
			p.cmu.Lock()
			locked = true
		}
		if ch != lastCh {
			// Results of one stream share a doneChan: one lookup for them.
			lastCh, lastC = ch, p.couriers[ch]
		}
		if lastC != nil {
			// Its room moves from the pool's limit to the channel's
			// backlog, as a Producer's does.
			lastC.q = append(lastC.q, courierItem{tx, size})
			lastC.backlog.take(1, size)
			relCount, relBytes = relCount+1, relBytes+size
			continue
		}
		select {
		case ch <- tx:
			relCount, relBytes = relCount+1, relBytes+size
			continue
		default:
		}
		if p.couriers == nil {
			p.couriers = map[chan *ProducerTransaction]*poolCourier{}
		}
		lastC = &poolCourier{ch: ch, q: []courierItem{{tx, size}}, exited: make(chan struct{}), backlog: new(pendingLimit)}
		lastC.backlog.init(int64(p.config.MaxPending), p.config.MaxPendingBytes)
		lastC.backlog.take(1, size)
		relCount, relBytes = relCount+1, relBytes+size
		p.couriers[ch] = lastC
		p.backlogs.Store(ch, lastC.backlog)
		go p.carry(lastC)
	}
	if locked {
		p.cmu.Unlock()
	}
	if relCount > 0 {
		p.limit.release(relCount, relBytes)
	}
}

// poolCourier delivers, in order, the results for one doneChan that was
// full. The room of the results it holds is in its backlog, not in the
// pool's limit: publishers to its channel wait for the backlog, the
// others do not (as with a Producer's couriers).
type poolCourier struct {
	ch      chan *ProducerTransaction
	q       []courierItem // guarded by ProducerPool.cmu: queued by deliver, not yet taken by carry
	exited  chan struct{}
	backlog *pendingLimit // Config.MaxPending, MaxPendingBytes of results held
}

type courierItem struct {
	tx   *ProducerTransaction
	size int64
}

func (p *ProducerPool) carry(c *poolCourier) {
	defer close(c.exited)
	var batch []courierItem
	for {
		// What deliver queued so far, at once; it queues more meanwhile.
		p.cmu.Lock()
		if len(c.q) == 0 {
			delete(p.couriers, c.ch)
			p.backlogs.Delete(c.ch)
			p.cmu.Unlock()
			return
		}
		batch, c.q = c.q, batch[:0]
		p.cmu.Unlock()
		// Room goes back once per run of results the channel took
		// without waiting, and before each wait: not once per result.
		var relCount, relBytes int64
		for i, it := range batch {
			select {
			case c.ch <- it.tx:
				relCount, relBytes = relCount+1, relBytes+it.size
				continue
			default:
			}
			if relCount > 0 {
				c.backlog.release(relCount, relBytes)
				relCount, relBytes = 0, 0
			}
			select {
			case c.ch <- it.tx:
				relCount, relBytes = 1, it.size
			case <-p.abandonChan:
				p.cmu.Lock()
				rest := append(batch[i:], c.q...)
				c.q = nil
				delete(p.couriers, c.ch)
				p.backlogs.Delete(c.ch)
				p.cmu.Unlock()
				for _, it := range rest {
					relCount, relBytes = relCount+1, relBytes+it.size
				}
				c.backlog.release(relCount, relBytes)
				p.log(LogLevelError, "%d results dropped after stop_timeout: doneChan not read", len(rest))
				return
			}
		}
		if relCount > 0 {
			c.backlog.release(relCount, relBytes)
		}
		clear(batch)
	}
}

// neverSentf classifies cause as never sent.
func neverSentf(cause error) error {
	return fmt.Errorf("%w: %w", ErrNeverSent, cause)
}

// neverSentCtx is the error of a publish whose caller's context ended
// before it was handed to a node.
func neverSentCtx(ctx context.Context) error {
	if cause := context.Cause(ctx); cause != ctx.Err() {
		return fmt.Errorf("%w: %w (%w)", ErrNeverSent, ctx.Err(), cause)
	}
	return fmt.Errorf("%w: %w", ErrNeverSent, ctx.Err())
}

// poolKind is what a pool publish asks a node to do.
type poolKind uint8

const (
	poolPUB poolKind = iota
	poolMPUB
	poolDPUB
)

// poolTx is one publish accepted by the pool. Fields below are set by the
// call, then only read, except where noted.
type poolTx struct {
	// The fields dispatch, settle and finish read and write, in the first
	// cache line: a queued publish is cold by the time a node takes it,
	// and again by the time its result comes. nodeArgs first: a result
	// finds its poolTx through it.
	nodeArgs  [1]interface{} // the args it is published with on a node: itself
	kind      poolKind
	keyed     bool                      // published by key: goes to the key's node
	finished  bool                      // guarded by ProducerPool.mu
	abandoned bool                      // guarded by ProducerPool.mu: the sync caller stopped waiting
	parked    bool                      // sync, guarded by ProducerPool.mu: given a node, waiting in its parked list
	attempts  int32                     // guarded by ProducerPool.mu: nodes it was handed to
	msgs      int                       // messages it publishes
	size      int64                     // bytes held against the pending limits
	node      *poolNode                 // guarded by ProducerPool.mu: the node holding it, or nil
	wake      chan *poolNode            // sync: the node it is given, or nil once finished
	epoch     uint64                    // guarded by ProducerPool.mu
	last      *poolNode                 // guarded by ProducerPool.mu: the node it last failed on
	doneChan  chan *ProducerTransaction // async: the caller's; nil drops the result
	result    *ProducerTransaction      // the node's last result, reused for delivery; set by the node hook
	err       error                     // guarded by ProducerPool.mu: the final result, once finished
	args      []interface{}

	inline     bool // sync, guarded by ProducerPool.mu: in its own enqueue; a node it is given then is not sent on wake
	topic      string
	body       []byte
	bodies     [][]byte
	delay      time.Duration
	inlineNode *poolNode       // sync: the node its own enqueue gave it, read by its caller only
	ctx        context.Context // sync with a context: not handed to a node once done
	keyHash    uint64
}

// poolQueue is a FIFO of pool publishes.
type poolQueue struct {
	buf  []*poolTx
	head int
}

func (q *poolQueue) len() int { return len(q.buf) - q.head }

func (q *poolQueue) pushBack(t *poolTx) {
	if q.head > 0 && q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
	} else if q.head > 1024 && q.head*2 > len(q.buf) {
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, t)
}

func (q *poolQueue) peek() *poolTx { return q.buf[q.head] }

func (q *poolQueue) popFront() *poolTx {
	t := q.buf[q.head]
	q.buf[q.head] = nil
	q.head++
	if q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
	}
	return t
}

// poolStats holds the pool's own counters; the per-node ones are on the
// nodes.
type poolStats struct {
	published, publishedBytes uint64 // guarded by ProducerPool.mu (count is called under it)
	refused                   atomic.Uint64
	neverSent, unknown        atomic.Uint64
	rerouted                  atomic.Uint64

	mu         sync.Mutex
	nsqdErrors map[string]uint64 // guarded by mu
}

func (s *poolStats) count(t *poolTx, err error) {
	switch {
	case err == nil:
		s.published += uint64(t.msgs)
		s.publishedBytes += uint64(t.size - 4*int64(btoi(t.kind == poolMPUB))*(1+int64(t.msgs)))
	case errors.Is(err, ErrUnknownOutcome):
		s.unknown.Add(uint64(t.msgs))
	case errors.Is(err, ErrNeverSent):
		s.neverSent.Add(uint64(t.msgs))
	default:
		var perr ErrProtocol
		if errors.As(err, &perr) {
			s.mu.Lock()
			if s.nsqdErrors == nil {
				s.nsqdErrors = map[string]uint64{}
			}
			s.nsqdErrors[perr.Code()]++
			s.mu.Unlock()
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
