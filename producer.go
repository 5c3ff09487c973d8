package nsq

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var instCount atomic.Int64

// errStopTimeout is why transactions still unanswered when Config.StopTimeout
// runs out fail.
var errStopTimeout = errors.New("nsq: Stop gave up waiting for nsqd's answers (stop_timeout)")

// Producer publishes to one nsqd. It connects lazily, on the first publish,
// and reconnects after a failure; it is safe for concurrent use.
//
// Every publish it accepts completes exactly once, with nsqd's answer: see
// the package documentation for what each error means.
type Producer struct {
	id     int64
	addr   string
	config Config

	logMu  sync.RWMutex
	logger [LogLevelMax + 1]logger // guarded by logMu
	logLvl LogLevel                // guarded by logMu

	// mu guards stopped. A call holds it for reading while it hands a
	// transaction to the router, so once Stop has set stopped under the
	// write lock no transaction can arrive that the router will not see.
	mu      sync.RWMutex
	stopped bool

	startOnce sync.Once   // starts the router
	started   atomic.Bool // the router was started

	limit   pendingLimit  // Config.MaxPending and MaxPendingBytes
	learned learnedLimits // nsqd's size limits, from its error texts
	stats   producerStats // behind Stats

	// The router's inbox.
	transactionChan chan *ProducerTransaction // accepted publishes
	responseChan    chan []byte               // response frames of the current Conn (unbuffered: keeps order)
	errorChan       chan []byte               // error frames of the current Conn (unbuffered: keeps order)
	closeChan       chan *Conn                // a Conn has closed and its goroutines have exited
	connectChan     chan connectResult        // a connection attempt has ended
	courierDoneChan chan *courier             // a courier has finished
	stopChan        chan struct{}             // closed by Stop
	abandonChan     chan struct{}             // closed when Stop's wait runs out: couriers give up
	exitChan        chan struct{}             // closed when the router has exited

	r router // owned by the router goroutine
}

// router is the state of the producer's router goroutine. Only that
// goroutine touches it.
type router struct {
	conn          *Conn              // the connection in use; nil when there is none
	connected     bool               // conn has finished its handshake
	closing       bool               // conn is being torn down; its OnClose is awaited
	connecting    bool               // a connection attempt is running
	cancelConnect context.CancelFunc // cancels it

	queue   txQueue // accepted, not yet prepared for the write goroutine, oldest first
	pending txQueue // handed to the write goroutine, awaiting nsqd's answer, oldest first

	// Results whose doneChan was full: each such channel gets a courier
	// goroutine that delivers them in order, so a channel nobody reads
	// holds back neither the router nor anyone else's results.
	couriers map[chan *ProducerTransaction]*courier
	carrying int // couriers running (a finished one may still be in the map)

	// The next batch for the write goroutine, grown from the queue until the
	// write goroutine takes it: once it has written the one before, and
	// fewer than maxWritesInFlight batches await answers. So batches form
	// while it is busy. Its commands are encoded as they are: each starts
	// with a transaction whose n counts its transactions; group is the index
	// of the last one, which may still grow into an MPUB.
	prep  []*ProducerTransaction
	group int
	spare []*ProducerTransaction // the batch the write goroutine had before; reused
	pings []*ProducerTransaction // Pings to write with prep; the write goroutine completes them

	refused []*ProducerTransaction // refused by nsqd; completed once the connection has closed

	writesInFlight int // batches handed to the write goroutine and not fully answered

	groupBytes int // MPUB body size of the group at prep[group]
	batchBytes int // largest automatic MPUB body; shrinks if nsqd refuses one as too big

	failures int       // consecutive failed connection attempts
	retryAt  time.Time // no connection attempt before this

	draining bool      // Stop was called
	deadline time.Time // when Stop stops waiting
	expired  bool      // the deadline has passed
	timer    *time.Timer
	timerAt  time.Time // when timer fires; zero when it is not armed

	relCount, relBytes int64 // completed since the last release to limit
}

type connectResult struct {
	conn *Conn
	err  error
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
		id:              instCount.Add(1),
		addr:            addr,
		config:          *config,
		transactionChan: make(chan *ProducerTransaction, 1024),
		responseChan:    make(chan []byte),
		errorChan:       make(chan []byte),
		closeChan:       make(chan *Conn, 1),
		connectChan:     make(chan connectResult, 1),
		courierDoneChan: make(chan *courier),
		stopChan:        make(chan struct{}),
		abandonChan:     make(chan struct{}),
		exitChan:        make(chan struct{}),
	}
	p.limit.init(int64(p.config.MaxPending), p.config.MaxPendingBytes)
	p.stats.epoch = time.Now()
	p.r.batchBytes = p.config.MaxBatchBytes
	if p.config.MaxBodySize > 0 && int64(p.r.batchBytes) > p.config.MaxBodySize {
		p.r.batchBytes = int(p.config.MaxBodySize)
	}
	l := log.New(os.Stderr, "", log.Flags())
	for i := range p.logger {
		p.logger[i] = l
	}
	p.logLvl = LogLevelInfo
	return p, nil
}

// String returns the nsqd address given to NewProducer.
func (p *Producer) String() string { return p.addr }

// Publish publishes body to topic and waits for nsqd's answer. body may be
// reused once Publish returns.
func (p *Producer) Publish(topic string, body []byte) error {
	return p.publishSync(context.Background(), kindPUB, topic, 0, body, nil)
}

// MultiPublish publishes bodies to topic in one MPUB command, stored all or
// none, and waits for nsqd's answer. The bodies may be reused once it returns.
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
// dropped. Results arrive in the order the publishes were made. body must
// not be modified until the result arrives.
//
// An error returned here (invalid input, ErrStopped) means the publish was
// not accepted and nothing will be sent on doneChan.
func (p *Producer) PublishAsync(topic string, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error {
	return p.publishAsync(context.Background(), kindPUB, topic, 0, body, nil, doneChan, args)
}

// MultiPublishAsync is the asynchronous MultiPublish: see PublishAsync. The
// bodies are copied, so they may be reused once it returns.
func (p *Producer) MultiPublishAsync(topic string, body [][]byte, doneChan chan *ProducerTransaction, args ...interface{}) error {
	return p.publishAsync(context.Background(), kindMPUB, topic, 0, nil, body, doneChan, args)
}

// DeferredPublishAsync is the asynchronous DeferredPublish: see PublishAsync.
func (p *Producer) DeferredPublishAsync(topic string, delay time.Duration, body []byte, doneChan chan *ProducerTransaction, args ...interface{}) error {
	return p.publishAsync(context.Background(), kindDPUB, topic, delay, body, nil, doneChan, args)
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
// and the producer's goroutines have exited. Calling Stop again does nothing.
func (p *Producer) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		if p.started.Load() {
			<-p.exitChan
		}
		return
	}
	p.stopped = true
	p.mu.Unlock()
	close(p.stopChan)
	if p.started.Load() {
		<-p.exitChan
	}
}

// SetLogger sets the logger for every level, and the lowest level logged.
// A nil logger silences the producer.
func (p *Producer) SetLogger(l logger, lvl LogLevel) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	for i := range p.logger {
		p.logger[i] = l
	}
	p.logLvl = lvl
}

// SetLoggerForLevel sets the logger for one level.
func (p *Producer) SetLoggerForLevel(l logger, lvl LogLevel) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	if lvl >= 0 && lvl <= LogLevelMax {
		p.logger[lvl] = l
	}
}

// SetLoggerLevel sets the lowest level logged.
func (p *Producer) SetLoggerLevel(lvl LogLevel) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	p.logLvl = lvl
}

func (p *Producer) log(lvl LogLevel, format string, args ...any) {
	if lvl < 0 || lvl > LogLevelMax {
		return
	}
	p.logMu.RLock()
	l, min := p.logger[lvl], p.logLvl
	p.logMu.RUnlock()
	if l == nil || lvl < min {
		return
	}
	if sl, ok := l.(*SlogLogger); ok {
		sl.log(lvl, p.id, p.addr, fmt.Sprintf(format, args...))
		return
	}
	l.Output(2, fmt.Sprintf("%-4s %3d %s", lvl, p.id, fmt.Sprintf(format, args...)))
}

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

// publishAsync validates a publish and hands it to the router.
func (p *Producer) publishAsync(ctx context.Context, kind txKind, topic string, delay time.Duration, body []byte, bodies [][]byte,
	doneChan chan *ProducerTransaction, args []interface{}) error {
	size, err := p.check(kind, topic, delay, body, bodies)
	if err != nil {
		p.stats.refused.Add(1)
		return err
	}
	if kind == kindMPUB {
		// go-nsq copies MultiPublishAsync's bodies at the call; callers rely on it.
		body, bodies = encodeMPUBBody(bodies, size), nil
	}
	// The context bounds the wait to enqueue only: the transaction is not
	// tied to it.
	tx := &ProducerTransaction{Args: args, doneChan: doneChan, kind: kind, topic: topic, delay: delay, body: body, size: size}
	return p.enqueue(ctx, tx)
}

// do runs a sync transaction: enqueue, wait, recycle.
func (p *Producer) do(ctx context.Context, tx *ProducerTransaction) error {
	if err := p.enqueue(ctx, tx); err != nil {
		putSyncTx(tx)
		return err
	}
	select {
	case <-tx.doneChan:
	case <-ctx.Done(): // nil, never ready, for a call without a context
		// The transaction stays queued or in flight and completes on its
		// own; the router never recycles it, so it is left to the GC.
		return &waitError{ctx: ctx}
	}
	err := tx.Error
	putSyncTx(tx)
	return err
}

// enqueue takes room under the pending limits and hands tx to the router.
func (p *Producer) enqueue(ctx context.Context, tx *ProducerTransaction) error {
	if _, try := ctx.(tryContext); !try && ctx.Err() != nil {
		return ctx.Err()
	}
	if tx.kind >= kindNOP {
		// Ping and Flush hold no room: they must work when the limit is reached.
	} else if _, try := ctx.(tryContext); try {
		if !p.limit.tryAcquire(tx.size) {
			p.stats.refused.Add(1)
			return ErrPendingFull
		}
	} else if err := p.limit.acquire(ctx, tx.size, p.stopChan); err != nil {
		return err
	}
	p.mu.RLock()
	if p.stopped {
		p.mu.RUnlock()
		if tx.kind < kindNOP {
			p.limit.release(1, tx.size)
		}
		return ErrStopped
	}
	p.startOnce.Do(p.start)
	p.transactionChan <- tx
	p.mu.RUnlock()
	return nil
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
	if max := p.config.MaxBodySize; max > 0 && size > max {
		return 0, fmt.Errorf("%w: MPUB body of %d bytes is over max_body_size (%d)", ErrTooLarge, size, max)
	}
	if max := p.learned.maxBody.Load(); max > 0 && size > max {
		return 0, fmt.Errorf("%w: MPUB body of %d bytes is over nsqd's --max-body-size (%d, from an earlier answer of nsqd)", ErrTooLarge, size, max)
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
	if max := p.config.MaxMsgSize; max > 0 && int64(len(body)) > max {
		return fmt.Errorf("%w: %s of %d bytes is over max_msg_size (%d)", ErrTooLarge, which(), len(body), max)
	}
	if max := p.learned.maxMsg.Load(); max > 0 && int64(len(body)) > max {
		return learnedTooBig(which(), len(body), max)
	}
	return nil
}

// waitError is returned by a context call whose context ended before nsqd
// answered. The publish itself goes on: it may still be published.
type waitError struct{ ctx context.Context }

func (e *waitError) Error() string {
	return "nsq: stopped waiting for nsqd's answer, the publish may still succeed: " + context.Cause(e.ctx).Error()
}

func (e *waitError) Unwrap() []error {
	if cause := context.Cause(e.ctx); cause != e.ctx.Err() {
		return []error{e.ctx.Err(), cause}
	}
	return []error{e.ctx.Err()}
}

// start launches the router; it runs until Stop.
func (p *Producer) start() {
	p.started.Store(true)
	p.r.timer = time.NewTimer(time.Hour)
	p.r.timer.Stop()
	go p.route()
}

type producerConnDelegate struct{ p *Producer }

func (d producerConnDelegate) OnResponse(c *Conn, data []byte) { d.p.responseChan <- data }
func (d producerConnDelegate) OnError(c *Conn, data []byte)    { d.p.errorChan <- data }
func (d producerConnDelegate) OnIOError(c *Conn, err error)    {}
func (d producerConnDelegate) OnHeartbeat(c *Conn) {
	d.p.stats.heartbeats.Add(1)
	d.p.log(LogLevelDebug, "(%s) heartbeat received", d.p.addr)
}
func (d producerConnDelegate) OnClose(c *Conn) { d.p.closeChan <- c }

// route is the router goroutine: it owns the transaction queues and the
// connection, hands batches to the write goroutine, matches nsqd's answers
// to the oldest pending transactions and delivers results.
func (p *Producer) route() {
	defer close(p.exitChan)
	r := &p.r
	stopChan := p.stopChan
	for {
		p.advance()
		p.releaseCompleted()
		if r.draining && p.finished() {
			break
		}
		p.armTimer()

		var writeChan chan writeRequest
		if !r.closing && ((len(r.prep) > 0 && r.writesInFlight < maxWritesInFlight) || len(r.pings) > 0) {
			writeChan = r.conn.writeChan
		}
		select {
		case writeChan <- writeRequest{txs: r.prep, nops: r.pings}:
			p.handedOff()
		case tx := <-p.transactionChan:
			p.accept(tx)
			for more := true; more; {
				select {
				case tx := <-p.transactionChan:
					p.accept(tx)
				default:
					more = false
				}
			}
		case data := <-p.responseChan:
			p.onResponse(data)
		case data := <-p.errorChan:
			p.onErrorFrame(data)
		case c := <-p.closeChan:
			p.onClosed(c)
		case res := <-p.connectChan:
			p.onConnected(res)
		case c := <-p.courierDoneChan:
			r.carrying--
			if r.couriers[c.ch] == c {
				delete(r.couriers, c.ch)
			}
		case <-r.timer.C:
			r.timerAt = time.Time{}
			if r.draining && !r.expired && !time.Now().Before(r.deadline) {
				p.expire()
			}
		case <-stopChan:
			stopChan = nil
			r.draining = true
			r.deadline = time.Now().Add(p.config.StopTimeout)
		}
	}
	r.timer.Stop()
	p.releaseCompleted()
}

// advance starts whatever can start: a connection attempt when work waits
// and there is no connection, a write when the connection is idle, and, once
// stopping with nothing left to answer, the close.
func (p *Producer) advance() {
	r := &p.r
	if r.expired {
		// Past Stop's deadline nothing more is sent (a closed connection
		// hands its unsent batch back to the queue).
		p.failQueue(neverSent(errStopTimeout))
	}
	if r.queue.len() > 0 {
		switch {
		case r.conn == nil:
			if !r.connecting && !time.Now().Before(r.retryAt) {
				p.startConnect()
			}
		case r.connected && !r.closing:
			p.prepare()
		}
	}
	if r.draining && r.conn != nil && !r.closing && p.quiet() {
		p.closeConn(ErrStopped)
	}
}

// quiet reports whether no accepted transaction is still unanswered.
func (p *Producer) quiet() bool {
	r := &p.r
	return len(p.transactionChan) == 0 && r.queue.len() == 0 && len(r.prep) == 0 && len(r.pings) == 0 &&
		r.pending.len() == 0 && len(r.refused) == 0 && !r.connecting
}

// finished reports whether a stopping router may exit.
func (p *Producer) finished() bool {
	r := &p.r
	return p.quiet() && r.conn == nil && r.carrying == 0
}

// armTimer points the timer at the next moment the router must act on its
// own: the end of a reconnect backoff, or Stop's deadline.
func (p *Producer) armTimer() {
	r := &p.r
	var at time.Time
	if r.queue.len() > 0 && r.conn == nil && !r.connecting {
		at = r.retryAt
	}
	if r.draining && !r.expired && (at.IsZero() || r.deadline.Before(at)) {
		at = r.deadline
	}
	if at.Equal(r.timerAt) {
		return
	}
	r.timerAt = at
	if at.IsZero() {
		r.timer.Stop()
		return
	}
	r.timer.Reset(time.Until(at))
}

func (p *Producer) accept(tx *ProducerTransaction) {
	if p.r.expired {
		p.complete(tx, neverSent(errStopTimeout))
		return
	}
	p.r.queue.pushBack(tx)
}

func (p *Producer) startConnect() {
	r := &p.r
	ctx, cancel := context.WithCancel(context.Background())
	r.connecting, r.cancelConnect = true, cancel
	c := NewConn(p.addr, &p.config, producerConnDelegate{p})
	c.logf = p.log
	p.log(LogLevelInfo, "(%s) connecting to nsqd", p.addr)
	go func() {
		_, err := c.connect(ctx)
		p.connectChan <- connectResult{conn: c, err: err}
	}()
}

func (p *Producer) onConnected(res connectResult) {
	r := &p.r
	r.connecting = false
	r.cancelConnect()
	if res.err != nil {
		p.stats.connectFailures.Add(1)
		r.failures++
		wait := p.backoff(r.failures)
		r.retryAt = time.Now().Add(wait)
		p.log(LogLevelError, "(%s) error connecting to nsqd - %s (next attempt in %s at the earliest)", p.addr, res.err, wait.Round(time.Millisecond))
		p.failQueue(neverSent(res.err))
		return
	}
	r.conn, r.connected, r.failures = res.conn, true, 0
	p.stats.connects.Add(1)
}

// failQueue fails, in order, every transaction not yet prepared.
func (p *Producer) failQueue(err error) {
	for p.r.queue.len() > 0 {
		p.complete(p.r.queue.popFront(), err)
	}
}

// backoff returns how long to wait after the n-th consecutive failed
// connection attempt: exponential from ReconnectBackoff up to
// MaxReconnectBackoff, with the upper half jittered.
func (p *Producer) backoff(n int) time.Duration {
	d := p.config.ReconnectBackoff
	for i := 1; i < n && d < p.config.MaxReconnectBackoff; i++ {
		d *= 2
	}
	d = min(d, p.config.MaxReconnectBackoff)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// prepare moves what is queued into the next batch for the write
// goroutine: runs of PUBs to one topic become one MPUB (automatic batching),
// up to MaxBatchMessages and the batch byte limit.
func (p *Producer) prepare() {
	r := &p.r
	maxCount := 1
	if p.config.AutoBatch {
		maxCount = p.config.MaxBatchMessages
	}
	if len(r.prep) == 0 {
		r.group = -1
	}
	maxMsg := p.learned.maxMsg.Load()
	for r.queue.len() > 0 {
		tx := r.queue.popFront()
		if tx.ctx != nil && tx.ctx.Err() != nil {
			p.complete(tx, neverSent(context.Cause(tx.ctx)))
			continue
		}
		if tx.settled == nil && maxMsg > 0 && (tx.kind == kindPUB || tx.kind == kindDPUB) && int64(len(tx.body)) > maxMsg {
			// Accepted before nsqd told us its limit.
			tx.settled = neverSent(learnedTooBig("message body", len(tx.body), maxMsg))
		}
		if tx.kind == kindNOP {
			r.pings = append(r.pings, tx)
			continue
		}
		if tx.kind == kindBarrier || tx.settled != nil {
			// Not sent: it completes, in order, once everything before it
			// has.
			switch {
			case len(r.prep) > 0:
				// It goes to pending behind the prepared batch, once that
				// is handed off: stop here.
				r.queue.pushFront(tx)
				return
			case r.pending.len() == 0:
				p.complete(tx, tx.settled) // nothing before it is unanswered
			default:
				r.pending.pushBack(tx)
			}
			continue
		}
		if r.group >= 0 {
			head := r.prep[r.group]
			if tx.kind == kindPUB && !tx.noBatch && tx.topic == head.topic && head.n < maxCount &&
				r.groupBytes+4+len(tx.body) <= r.batchBytes {
				head.n++
				r.groupBytes += 4 + len(tx.body)
				r.prep = append(r.prep, tx)
				continue
			}
		}
		tx.n = 1
		r.prep = append(r.prep, tx)
		r.group = -1
		if tx.kind == kindPUB && !tx.noBatch {
			r.group = len(r.prep) - 1
			r.groupBytes = 8 + len(tx.body)
		}
	}
}

// maxWritesInFlight is how many batches may await nsqd's answers at once.
// Publishes arriving meanwhile join the next batch: under many concurrent
// callers batches grow instead of the writes multiplying, and a lone publish
// still goes out at once.
const maxWritesInFlight = 2

// popPending removes the oldest pending transaction.
func (p *Producer) popPending() *ProducerTransaction {
	r := &p.r
	tx := r.pending.popFront()
	if tx.lastOfWrite {
		tx.lastOfWrite = false
		r.writesInFlight--
	}
	return tx
}

// unprepare puts the prepared batch, which never reached the socket, back
// at the front of the queue, for the next connection.
func (p *Producer) unprepare() {
	r := &p.r
	for i := len(r.prep) - 1; i >= 0; i-- {
		r.queue.pushFront(r.prep[i])
	}
	clear(r.prep)
	r.prep = r.prep[:0]
	for _, tx := range r.pings {
		r.queue.pushFront(tx)
	}
	r.pings = nil
}

// handedOff records that the write goroutine took the prepared batch: its
// publishes now await nsqd's answers, in order.
func (p *Producer) handedOff() {
	r := &p.r
	now := p.stats.now()
	r.pings = nil // the write goroutine's now
	for _, tx := range r.prep {
		if tx.kind == kindPUB && tx.n > 1 {
			p.stats.batches.Add(1)
			p.stats.batched.Add(uint64(tx.n))
		}
		tx.sentAt = now
		r.pending.pushBack(tx)
	}
	if len(r.prep) > 0 {
		r.prep[len(r.prep)-1].lastOfWrite = true
		r.writesInFlight++
	}
	// The write goroutine took this batch, so it is done with the one
	// before: that becomes the next.
	clear(r.spare)
	r.prep, r.spare = r.spare[:0], r.prep
}

func (p *Producer) onResponse(data []byte) {
	r := &p.r
	if r.closing {
		return
	}
	if string(data) != respOK {
		p.closeConn(&FrameError{Reason: fmt.Sprintf("unexpected response %q to a publish", data)})
		return
	}
	if r.pending.len() == 0 {
		p.closeConn(&FrameError{Reason: "nsqd answered OK with no command pending"})
		return
	}
	head := r.pending.peek(0)
	p.stats.addLatency(p.stats.now() - head.sentAt)
	for n := head.n; n > 0; n-- {
		p.complete(p.popPending(), nil)
	}
	p.popSettled()
}

// onErrorFrame handles an error frame. nsqd closes the connection after any
// error to a publish, without executing the commands pipelined behind the
// failed one: only the failed command fails, the rest are sent again on a
// new connection.
func (p *Producer) onErrorFrame(data []byte) {
	r := &p.r
	if r.closing {
		return
	}
	perr := ErrProtocol{Reason: string(data)}
	if r.pending.len() == 0 {
		p.closeConn(fmt.Errorf("nsq: nsqd sent an error with no command pending: %w", perr))
		return
	}
	head := r.pending.peek(0)
	n := head.n
	code := perr.Code()
	var retry txQueue
	learnedMsg, learnedBody := p.learn(perr)
	switch {
	case n > 1 && learnedMsg > 0 && groupExceeds(&r.pending, n, learnedMsg):
		// An automatic batch with a message over nsqd's --max-msg-size:
		// nsqd names the first one too big, and stored nothing. Fail the
		// too big ones, send the others again.
		blamed := false
		for ; n > 0; n-- {
			tx := p.popPending()
			// The too big ones keep their place, settled: they complete in
			// order, without being sent.
			switch {
			case int64(len(tx.body)) <= learnedMsg:
			case !blamed:
				blamed = true
				tx.settled = perr
			default:
				tx.settled = neverSent(learnedTooBig("message body", len(tx.body), learnedMsg))
			}
			retry.pushBack(tx)
		}
		p.log(LogLevelError, "(%s) nsqd refused a batch: %s; its other messages are sent again", p.addr, perr)
	case n > 1 && learnedBody > 0:
		// An automatic batch over nsqd's --max-body-size: smaller batches.
		r.batchBytes = min(r.batchBytes, int(learnedBody))
		p.log(LogLevelWarning, "(%s) nsqd refused a batch of %d messages (%s); batches are now at most %d bytes", p.addr, n, perr, r.batchBytes)
		for ; n > 0; n-- {
			retry.pushBack(p.popPending())
		}
	case n > 1 && (code == "E_BAD_MESSAGE" || code == "E_BAD_BODY"):
		// An automatic batch that nsqd refused as a whole stored nothing:
		// send its messages one by one, so that only the bad one fails.
		if code == "E_BAD_BODY" && r.batchBytes > 1024 {
			r.batchBytes /= 2
			p.log(LogLevelWarning, "(%s) nsqd refused a batch of %d messages (%s); batches are now at most %d bytes: set max_batch_bytes below nsqd's --max-body-size", p.addr, n, perr, r.batchBytes)
		}
		for ; n > 0; n-- {
			tx := p.popPending()
			tx.noBatch = true
			retry.pushBack(tx)
		}
	default:
		// nsqd may refuse a command before reading all of it, while the
		// write goroutine still writes its body: complete it (and let the
		// caller reuse the body) only once that goroutine has exited.
		p.log(LogLevelError, "(%s) nsqd refused a publish: %s", p.addr, perr)
		err := error(perr)
		if code == "E_MPUB_FAILED" {
			// nsqd stores an MPUB's messages one by one and may have stored
			// some before failing.
			err = unknownOutcome(perr)
		}
		for ; n > 0; n-- {
			tx := p.popPending()
			tx.Error = err
			r.refused = append(r.refused, tx)
		}
	}
	if r.pending.len() > 0 {
		p.log(LogLevelInfo, "(%s) resending the %d commands nsqd did not execute", p.addr, r.pending.len())
	}
	for r.pending.len() > 0 {
		retry.pushBack(p.popPending())
	}
	p.unprepare()
	r.queue.prependAll(&retry)
	p.closeConn(perr)
}

// popSettled completes the Flush barriers and settled transactions that
// have reached the front of the pending FIFO: everything before them has
// completed.
func (p *Producer) popSettled() {
	r := &p.r
	for r.pending.len() > 0 {
		if head := r.pending.peek(0); head.kind != kindBarrier && head.settled == nil {
			return
		}
		tx := p.popPending()
		p.complete(tx, tx.settled)
	}
}

// closeConn starts tearing the connection down; onClosed finishes.
func (p *Producer) closeConn(err error) {
	r := &p.r
	if r.conn == nil || r.closing {
		return
	}
	if err != ErrStopped {
		p.log(LogLevelWarning, "(%s) closing the connection: %s", p.addr, err)
	}
	r.closing = true
	r.conn.teardown(err)
}

// onClosed settles everything the closed connection held: what was written
// and not answered has an unknown outcome.
func (p *Producer) onClosed(c *Conn) {
	r := &p.r
	if c != r.conn {
		return // cannot happen: one connection at a time
	}
	err := c.closeErr()
	if !r.closing {
		p.log(LogLevelError, "(%s) connection lost: %s", p.addr, err)
	}
	for _, tx := range r.refused {
		p.complete(tx, tx.Error)
	}
	clear(r.refused)
	r.refused = r.refused[:0]
	p.unprepare()
	for r.pending.len() > 0 {
		tx := p.popPending()
		if tx.kind == kindBarrier || tx.settled != nil {
			p.complete(tx, tx.settled)
		} else {
			p.complete(tx, unknownOutcome(err))
		}
	}
	r.conn, r.connected, r.closing = nil, false, false
}

// expire ends Stop's wait: what is queued fails as never sent, the
// connection is closed (what it holds fails as unknown), a connection
// attempt is cancelled.
func (p *Producer) expire() {
	r := &p.r
	r.expired = true
	n := r.queue.len() + r.pending.len()
	if n > 0 || r.carrying > 0 {
		p.log(LogLevelWarning, "(%s) stop_timeout (%s): %d publishes still unanswered, results for %d doneChans not taken",
			p.addr, p.config.StopTimeout, n, r.carrying)
	}
	if r.connecting {
		r.cancelConnect()
	}
	p.closeConn(errStopTimeout)
	close(p.abandonChan) // couriers drop what they still carry
}

// complete records a transaction's outcome and delivers it: at once when its
// doneChan has room, else through that channel's courier, which keeps its
// results in order without ever blocking the router.
func (p *Producer) complete(tx *ProducerTransaction, err error) {
	r := &p.r
	tx.Error = err
	size, holds := tx.size, tx.kind < kindNOP // tx belongs to its receiver once sent
	p.count(tx, err)
	ch := tx.doneChan
	switch {
	case tx.internal:
		ch <- tx // capacity 1 and ours: never blocks
	case ch == nil:
	case r.expired:
		select {
		case ch <- tx:
		default:
			p.log(LogLevelError, "(%s) result dropped after stop_timeout: doneChan not read (error: %v)", p.addr, err)
		}
	default:
		if c := r.couriers[ch]; c != nil && c.carry(tx) {
			return // released when delivered
		}
		select {
		case ch <- tx:
		default:
			if r.couriers == nil {
				r.couriers = make(map[chan *ProducerTransaction]*courier)
			}
			c := &courier{ch: ch}
			c.q.pushBack(tx)
			r.couriers[ch] = c
			r.carrying++
			go c.run(p)
			return
		}
	}
	if holds {
		r.relCount++
		r.relBytes += size
	}
}

// courier delivers, in order, the results for one doneChan that was full.
type courier struct {
	ch chan *ProducerTransaction

	mu   sync.Mutex
	q    txQueue // guarded by mu
	done bool    // guarded by mu: the courier has finished and takes nothing more
}

// carry hands a result to the courier; false if it has finished.
func (c *courier) carry(tx *ProducerTransaction) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return false
	}
	c.q.pushBack(tx)
	return true
}

func (c *courier) run(p *Producer) {
	defer func() { p.courierDoneChan <- c }()
	for {
		c.mu.Lock()
		if c.q.len() == 0 {
			c.done = true
			c.mu.Unlock()
			return
		}
		tx := c.q.peek(0)
		c.mu.Unlock()
		size, holds := tx.size, tx.kind < kindNOP
		select {
		case c.ch <- tx:
			c.mu.Lock()
			c.q.popFront()
			c.mu.Unlock()
			if holds {
				p.limit.release(1, size)
			}
		case <-p.abandonChan:
			c.mu.Lock()
			c.done = true
			dropped := c.q.len()
			for c.q.len() > 0 {
				if tx := c.q.popFront(); tx.kind < kindNOP {
					p.limit.release(1, tx.size)
				}
			}
			c.mu.Unlock()
			p.log(LogLevelError, "(%s) %d results dropped after stop_timeout: doneChan not read", p.addr, dropped)
			return
		}
	}
}

func (p *Producer) releaseCompleted() {
	r := &p.r
	if r.relCount > 0 {
		p.limit.release(r.relCount, r.relBytes)
		r.relCount, r.relBytes = 0, 0
	}
}

// count adds a completed transaction to the stats.
func (p *Producer) count(tx *ProducerTransaction, err error) {
	if tx.kind == kindNOP || tx.kind == kindBarrier {
		return
	}
	s := &p.stats
	switch e := err.(type) {
	case nil:
		n := tx.messages()
		s.published.Add(uint64(n))
		if tx.kind == kindMPUB {
			s.publishedBytes.Add(uint64(tx.size - 4 - 4*int64(n)))
		} else {
			s.publishedBytes.Add(uint64(tx.size))
		}
	case ErrProtocol:
		if e.Is(ErrUnknownOutcome) { // E_MPUB_FAILED
			s.unknown.Add(uint64(tx.messages()))
		} else {
			s.addNsqdError(e.Code())
		}
	case ErrIdentify:
		s.neverSent.Add(uint64(tx.messages()))
	case *outcomeError:
		if e.class == ErrNeverSent {
			s.neverSent.Add(uint64(tx.messages()))
		} else {
			s.unknown.Add(uint64(tx.messages()))
		}
	}
}

// learnedLimits holds nsqd's size limits as its error texts revealed them
// ("E_BAD_MESSAGE PUB message too big 2000 > 1024"); 0 while unknown. nsqd
// does not announce them, and a publish over them costs the connection (and
// the commands pipelined on it), so later ones are refused at the call.
type learnedLimits struct {
	maxMsg  atomic.Int64 // --max-msg-size
	maxBody atomic.Int64 // --max-body-size
}

// learn records the limit an error from nsqd states, and returns it.
func (p *Producer) learn(perr ErrProtocol) (maxMsg, maxBody int64) {
	code := perr.Code()
	if code != "E_BAD_MESSAGE" && code != "E_BAD_BODY" {
		return 0, 0
	}
	i := strings.LastIndex(perr.Reason, " > ")
	if i < 0 {
		return 0, 0
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(perr.Reason[i+3:]), 10, 64)
	if err != nil || limit <= 0 {
		return 0, 0
	}
	switch {
	case strings.Contains(perr.Reason, "message too big"):
		p.learned.maxMsg.Store(limit)
		return limit, 0
	case strings.Contains(perr.Reason, "body too big"):
		p.learned.maxBody.Store(limit)
		return 0, limit
	}
	return 0, 0
}

func learnedTooBig(which string, size int, max int64) error {
	return fmt.Errorf("%w: %s of %d bytes is over nsqd's --max-msg-size (%d, from an earlier answer of nsqd)", ErrTooLarge, which, size, max)
}

// groupExceeds reports whether one of the first n pending transactions has
// a body over limit.
func groupExceeds(q *txQueue, n int, limit int64) bool {
	for i := 0; i < n; i++ {
		if int64(len(q.peek(i).body)) > limit {
			return true
		}
	}
	return false
}
