package nsq

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// errStopTimeout is why transactions still unanswered when Config.StopTimeout
// runs out fail.
var errStopTimeout = errors.New("nsq: Stop gave up waiting for nsqd's answers (stop_timeout)")

// maxWritesInFlight is how many batches may await nsqd's answers at once.
// Publishes arriving meanwhile join the next batch: under many concurrent
// callers batches grow instead of the writes multiplying, and a lone publish
// still goes out at once.
const maxWritesInFlight = 2

// router is a producer's router goroutine: it owns the connection and the
// transaction queues, hands batches to the connection's write goroutine,
// matches nsqd's answers to the oldest pending transactions (FIFO) and
// delivers the results.
//
// The fields up to the inbox's are set by newRouter and then only read;
// they are what the router shares with the Producer, its Conns and its
// couriers, each safe for concurrent use. Everything after them is touched
// by the router goroutine alone.
type router struct {
	addr    string
	config  *Config // the Producer's copy, read-only
	logs    *logSink
	limit   *pendingLimit
	learned *learnedLimits
	stats   *producerStats
	// The backlog of each doneChan that has a courier: the publishing calls
	// wait on it (chan *ProducerTransaction -> *pendingLimit).
	backlogs *sync.Map
	hook     txHook // the Producer's: takes async results in place of their doneChans, and hands over publishes; or nil

	// The router's inbox.
	transactionChan <-chan *ProducerTransaction // accepted publishes (the Producer's)
	stopChan        <-chan struct{}             // closed by Stop
	withdrawChan    <-chan *ProducerTransaction // sync publishes whose context ended (the Producer's)
	writtenChan     chan error                  // the write goroutine is done with a batch: the error of writing it (room for every report not read yet: the one before each handoff, and the last)
	// The events of the router's Conns (frames, OnClose, connection
	// results) and couriers, in one channel: the router's select has one
	// case for them instead of five, and it locks every channel of its
	// select each time it parks and wakes, twice per sync publish. A Conn's
	// frames and its OnClose keep their order.
	eventChan   chan routerEvent
	abandonChan chan struct{}   // closed when Stop's wait runs out: couriers give up
	exitChan    chan<- struct{} // closed when the router has exited (the Producer's)

	// The connection in use. Every event of a Conn is matched to the one it
	// comes from: conn, or the attempt still connecting.
	conn        *Conn     // the connection in use; nil when there is none
	connected   bool      // conn has finished its handshake
	closing     bool      // conn is being torn down; its OnClose is awaited
	connectedAt time.Time // when conn was installed
	proven      bool      // nsqd has answered a publish on conn

	connecting     bool               // a connection attempt is running
	attempt        *Conn              // its Conn; its goroutines may run before its result comes
	attemptClosed  bool               // attempt's OnClose came before its result: never installed
	attemptRefused bool               // nsqd sent a frame on attempt before any command: torn down
	cancelConnect  context.CancelFunc // cancels it

	queue   txQueue // accepted, not yet prepared for the write goroutine, oldest first
	pending txQueue // handed to the write goroutine, awaiting nsqd's answer, oldest first

	// Results whose doneChan was full: each such channel gets a courier
	// goroutine that delivers them in order, so a channel nobody reads
	// holds back neither the router nor anyone else's results, and (its
	// backlog being its own) none but its own publishers.
	couriers map[chan *ProducerTransaction]*courier
	carrying int // couriers running (a finished one may still be in the map)
	// Results for one courier, gathered while the router completes a run
	// of them and carried at once (carryNow): one lock per run instead of
	// one per result.
	carryTo  *courier
	carryRun []*ProducerTransaction

	// The next batch for the write goroutine, grown from the queue until the
	// write goroutine takes it: once it has written the one before, and
	// fewer than maxWritesInFlight batches await answers. So batches form
	// while it is busy. Its commands are encoded as they are: each starts
	// with a transaction whose n counts its transactions; group is the index
	// of the last one, which may still grow into an MPUB (its head's
	// groupSize is the MPUB body size so far).
	prep  []*ProducerTransaction
	group int
	spare []*ProducerTransaction // the batch the write goroutine had before; reused
	pings []*ProducerTransaction // Pings to write with prep; the write goroutine completes them

	refused []*ProducerTransaction // refused by nsqd (settled holds why); completed once the connection has closed

	writesInFlight int // batches handed to the write goroutine and not fully answered

	// Batches are numbered from 1 as they are handed to the write goroutine;
	// it reports on writtenChan, in order, when it is done with each.
	handed    uint64                 // the last batch handed
	written   uint64                 // the last batch the write goroutine is done with
	unwritten uint64                 // the first batch it reported not written at all (its Conn was closed); 0: none
	withdrawn []*ProducerTransaction // handed sync publishes whose context ended, until the write goroutine is done with them
	prepCtx   int                    // transactions in prep with a context: checked before each handoff
	prepMsgs  int                    // messages in prep
	prepBytes int64                  // their bytes (as held against Config.MaxPendingBytes)
	prepStop  bool                   // prep stopped at a placeholder: it cannot grow before it is handed off
	// A pool node's router writes a second batch while one awaits its
	// answer only when that batch is full (see writable): a node sees a
	// share of the pool's sync callers, and its batches would otherwise
	// be half as large as a Producer's (measured, 64 sync callers over
	// three nsqd on two CPUs: 0.83-0.89x one Producer's msgs/s before,
	// 0.92-0.97x after; the async stream, whose batches are full, is
	// unchanged).
	fullSecond bool

	batchBytes int // largest automatic MPUB body; shrinks if nsqd refuses one as too big

	failures int       // consecutive failed connection attempts (connections that ended before proving themselves included)
	retryAt  time.Time // no connection attempt before this

	draining bool      // Stop was called
	deadline time.Time // when Stop stops waiting
	expired  bool      // the deadline has passed
	timer    *time.Timer
	timerAt  time.Time // when timer fires; zero when it is not armed

	release roomRelease // room of completed transactions, returned to limit once per loop, and before a sync caller's result
}

// routerEvent is one event on eventChan.
type routerEvent struct {
	kind    eventKind
	conn    *Conn    // the Conn of a frame, an OnClose or a connection result
	data    []byte   // a frame's data
	err     error    // a connection attempt's error
	courier *courier // a courier that has finished
}

type eventKind uint8

const (
	evResponse    eventKind = iota // a response frame of conn
	evError                        // an error frame of conn
	evClosed                       // conn has closed and its goroutines have exited
	evConnected                    // a connection attempt (conn) has ended, with err
	evCourierDone                  // courier has finished
)

type connectResult struct {
	conn *Conn
	err  error
}

// connFrame is a frame's data, with the Conn that read it.
type connFrame struct {
	c    *Conn
	data []byte
}

// provingTime is how long a connection must live, when nsqd has not
// answered any publish on it, for its end not to count as a failed
// connection attempt: a server that accepts and then closes must not make
// the producer reconnect in a hot loop.
const provingTime = 5 * time.Second

// invariantPanics makes a state the router or the pool believes impossible
// panic in tests; elsewhere the router logs it at ERR level (impossible) and
// the pool carries on.
var invariantPanics = testing.Testing()

// impossible reports a broken invariant.
func (r *router) impossible(format string, args ...any) {
	msg := fmt.Sprintf("nsq: router invariant broken: "+format, args...)
	if invariantPanics {
		panic(msg)
	}
	r.log(LogLevelError, "(%s) %s", r.addr, msg)
}

// newRouter returns the router of p, ready to run.
func newRouter(p *Producer) *router {
	r := &router{
		addr:            p.addr,
		config:          &p.config,
		logs:            &p.logs,
		limit:           &p.limit,
		learned:         &p.learned,
		stats:           &p.stats,
		backlogs:        &p.backlogs,
		hook:            p.hook,
		transactionChan: p.transactionChan,
		stopChan:        p.stopChan,
		withdrawChan:    p.withdrawChan,
		writtenChan:     make(chan error, maxWritesInFlight+1),
		exitChan:        p.exitChan,
		eventChan:       make(chan routerEvent, 1),
		abandonChan:     make(chan struct{}),
		timer:           time.NewTimer(time.Hour),
	}
	r.timer.Stop()
	r.fullSecond = r.hook != nil
	r.batchBytes = r.config.MaxBatchBytes
	if r.config.MaxBodySize > 0 && int64(r.batchBytes) > r.config.MaxBodySize {
		r.batchBytes = int(r.config.MaxBodySize)
	}
	return r
}

func (r *router) log(lvl LogLevel, format string, args ...any) {
	r.logs.log(lvl, format, args...)
}

// producerConnDelegate passes a Conn's events to its router. Its methods run
// on the Conn's goroutines.
type producerConnDelegate struct{ r *router }

func (d producerConnDelegate) OnResponse(c *Conn, data []byte) {
	d.r.eventChan <- routerEvent{kind: evResponse, conn: c, data: data}
}
func (d producerConnDelegate) OnError(c *Conn, data []byte) {
	d.r.eventChan <- routerEvent{kind: evError, conn: c, data: data}
}
func (d producerConnDelegate) OnIOError(c *Conn, err error) {}
func (d producerConnDelegate) OnHeartbeat(c *Conn) {
	d.r.stats.heartbeats.Add(1)
	d.r.log(LogLevelDebug, "(%s) heartbeat received", d.r.addr)
}
func (d producerConnDelegate) OnClose(c *Conn) { d.r.eventChan <- routerEvent{kind: evClosed, conn: c} }

// run is the router goroutine; it returns once Stop was called and every
// accepted transaction has completed.
func (r *router) run() {
	defer close(r.exitChan)
	stopChan := r.stopChan
	for {
		r.advance()
		r.carryNow()
		r.release.to(r.limit)
		if r.hook != nil {
			// The results of this pass, at once; then what the hook hands
			// over, accepted as if it came through transactionChan.
			if txs := r.hook.flush(); len(txs) > 0 {
				for _, tx := range txs {
					r.accept(tx)
				}
				continue
			}
		}
		if r.draining && r.finished() {
			break
		}
		r.armTimer()

		var writeChan chan writeRequest
		if r.writable() {
			writeChan = r.conn.writeChan
		}
		// The write goroutine's reports are read as batches are handed
		// (see handedOff), and here only while a withdrawn publish waits
		// for one: no wakeup per batch.
		var writtenChan chan error
		if len(r.withdrawn) > 0 {
			writtenChan = r.writtenChan
		}
		select {
		case writeChan <- writeRequest{txs: r.prep, nops: r.pings, done: r.writtenChan}:
			r.handedOff()
		case err := <-writtenChan:
			r.onWritten(err)
		case tx := <-r.withdrawChan:
			r.acceptAll() // tx may still be in the inbox
			r.withdraw(tx)
		case tx := <-r.transactionChan:
			r.accept(tx)
			r.acceptAll()
			r.handOffNow()
		case ev := <-r.eventChan:
			r.onEvent(ev)
		case <-r.timer.C:
			r.timerAt = time.Time{}
			if r.draining && !r.expired && !time.Now().Before(r.deadline) {
				r.expire()
			}
		case <-stopChan:
			stopChan = nil
			r.draining = true
			r.deadline = time.Now().Add(r.config.StopTimeout)
		}
	}
	r.timer.Stop()
	r.carryNow()
	r.release.to(r.limit)
}

// onEvent handles an event of a Conn or a courier.
func (r *router) onEvent(ev routerEvent) {
	switch ev.kind {
	case evResponse:
		if r.fromConn(connFrame{ev.conn, ev.data}) {
			r.onResponse(ev.data)
		}
	case evError:
		if r.fromConn(connFrame{ev.conn, ev.data}) {
			r.onErrorFrame(ev.data)
		}
	case evClosed:
		r.onClosed(ev.conn)
	case evConnected:
		r.onConnected(connectResult{conn: ev.conn, err: ev.err})
	case evCourierDone:
		r.courierDone(ev.courier)
	default:
		r.impossible("an event of kind %d", ev.kind)
	}
}

// writable reports whether there is something for the write goroutine to
// take: the prepared batch, when fewer than maxWritesInFlight batches await
// answers, or Pings.
func (r *router) writable() bool {
	switch {
	case r.conn == nil || r.closing:
		return false
	case len(r.pings) > 0:
		return true
	case len(r.prep) == 0 || r.writesInFlight >= maxWritesInFlight:
		return false
	}
	return r.writesInFlight == 0 || !r.fullSecond || r.prepFull()
}

// prepFull reports whether the prepared batch can grow no more: it holds
// max_batch_messages messages (1 without auto_batch) or max_batch_bytes, or
// it stopped at a placeholder.
func (r *router) prepFull() bool {
	maxCount := 1
	if r.config.AutoBatch {
		maxCount = r.config.MaxBatchMessages
	}
	return r.prepStop || r.prepMsgs >= maxCount || r.prepBytes >= int64(r.batchBytes)
}

// handOffNow hands what was just accepted to the write goroutine if it is
// idle, without another turn of the loop: a sync publish reaches the socket
// without a second pass through the router's select (and its locking of
// every channel in it). When the write goroutine is busy, the loop hands the
// batch over once it is free, as before.
func (r *router) handOffNow() {
	r.advance()
	if !r.writable() {
		return
	}
	select {
	case r.conn.writeChan <- writeRequest{txs: r.prep, nops: r.pings, done: r.writtenChan}:
		r.handedOff()
	default:
	}
}

// advance starts whatever can start: a connection attempt when work waits
// and there is no connection, a write when the connection is idle, and, once
// stopping with nothing left to answer, the close.
func (r *router) advance() {
	if r.expired && r.conn == nil {
		// Past Stop's deadline nothing more is sent. What is queued fails
		// once the connection has closed: it settled what it held, older
		// than the queue, and handed its unsent batch back to the queue.
		r.failQueue(neverSent(errStopTimeout))
	}
	r.popQueuedPlaceholders()
	if r.queue.len() > 0 {
		switch {
		case r.conn == nil:
			if !r.connecting && !time.Now().Before(r.retryAt) {
				r.startConnect()
			}
		case r.connected && !r.closing:
			r.prepare()
		}
	}
	if r.prepCtx > 0 {
		r.dropEnded()
	}
	if r.draining && r.conn != nil && !r.closing && r.quiet() {
		r.closeConn(ErrStopped)
	}
}

// popQueuedPlaceholders completes the placeholders (Flush barriers,
// settled transactions) and the publishes whose context ended at the front
// of the queue when nothing accepted before them is unanswered: they need
// no connection, and must not make one.
func (r *router) popQueuedPlaceholders() {
	if len(r.prep) > 0 || r.pending.len() > 0 || len(r.refused) > 0 {
		return
	}
	for r.queue.len() > 0 {
		switch tx := r.queue.peek(0); {
		case tx.placeholder():
			r.settle(r.queue.popFront(), nil)
		case tx.ctx != nil && tx.ctx.Err() != nil:
			r.settle(r.queue.popFront(), &ctxError{ctx: tx.ctx, class: ErrNeverSent})
		default:
			return
		}
	}
}

// quiet reports whether no accepted transaction is still unanswered.
func (r *router) quiet() bool {
	return len(r.transactionChan) == 0 && r.queue.len() == 0 && len(r.prep) == 0 && len(r.pings) == 0 &&
		r.pending.len() == 0 && len(r.refused) == 0 && !r.connecting
}

// finished reports whether a stopping router may exit.
func (r *router) finished() bool {
	return r.quiet() && r.conn == nil && r.carrying == 0
}

// armTimer points the timer at the next moment the router must act on its
// own: the end of a reconnect backoff, or Stop's deadline.
func (r *router) armTimer() {
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

// accept queues a transaction the Producer handed over.
func (r *router) accept(tx *ProducerTransaction) {
	if tx == nil {
		return // the hook's wake-up: this pass's flush takes what it has
	}
	r.queue.pushBack(tx)
}

// acceptAll accepts what waits in the inbox.
func (r *router) acceptAll() {
	for {
		select {
		case tx := <-r.transactionChan:
			r.accept(tx)
		default:
			return
		}
	}
}

func (r *router) startConnect() {
	ctx, cancel := context.WithCancel(context.Background())
	c := NewConn(r.addr, r.config, producerConnDelegate{r})
	r.connecting, r.attempt, r.attemptClosed, r.attemptRefused, r.cancelConnect = true, c, false, false, cancel
	c.logf = r.logs.log
	r.log(LogLevelInfo, "(%s) connecting to nsqd", r.addr)
	go func() {
		_, err := c.connect(ctx)
		r.eventChan <- routerEvent{kind: evConnected, conn: c, err: err}
	}()
}

func (r *router) onConnected(res connectResult) {
	if res.conn != r.attempt {
		r.impossible("a connection result for a Conn that is not the attempt")
		return
	}
	c := res.conn
	r.connecting, r.attempt = false, nil
	r.cancelConnect()
	err := res.err
	if err == nil && r.attemptClosed {
		// Its goroutines have exited already: installing it would leave
		// the producer with a connection that never answers.
		err = fmt.Errorf("nsq: connection closed before its first use: %w", c.closeErr())
	}
	if err != nil {
		r.stats.connectFailures.Add(1)
		r.failed("error connecting to nsqd - %s", err)
		return
	}
	r.conn, r.connected, r.closing = c, true, r.attemptRefused
	r.connectedAt, r.proven = time.Now(), false
	// The limits nsqd stated lived with the connection it stated them on:
	// this one may reach an nsqd restarted with others, or another one.
	r.learned.maxMsg.Store(0)
	r.learned.maxBody.Store(0)
	r.stats.connects.Add(1)
}

// failed records a failed connection attempt, or a connection that ended
// before it proved itself: the next attempt waits for the backoff, and what
// is queued fails as never sent.
func (r *router) failed(format string, err error) {
	r.failures++
	wait := reconnectBackoff(r.config, r.failures)
	r.retryAt = time.Now().Add(wait)
	r.log(LogLevelError, "(%s) "+format+" (next attempt in %s at the earliest)", r.addr, err, wait.Round(time.Millisecond))
	r.failQueue(neverSent(err))
}

// fromConn reports whether f comes from the connection in use, to be
// handled. A frame from the attempt still connecting comes before any
// command was written, so it breaks the protocol: the attempt is torn down
// (and never used). A frame from any other Conn cannot come: a Conn's
// frames all come before its OnClose, after which the router forgets it.
func (r *router) fromConn(f connFrame) bool {
	switch f.c {
	case r.conn:
		return true
	case r.attempt:
		r.attemptRefused = true
		f.c.teardown(&FrameError{Reason: fmt.Sprintf("nsqd sent %q before any command", f.data)})
	default:
		r.impossible("a frame from a Conn that is neither in use nor connecting")
	}
	return false
}

// failQueue fails, in order, every transaction not yet prepared.
func (r *router) failQueue(err error) {
	for r.queue.len() > 0 {
		r.settle(r.queue.popFront(), err)
	}
}

// settle completes tx with err, unless tx is a placeholder: a settled
// outcome is never overwritten, and a Flush barrier completes with nil (it
// only waits).
func (r *router) settle(tx *ProducerTransaction, err error) {
	if tx.placeholder() {
		err = tx.settled
	}
	r.complete(tx, err)
}

// reconnectBackoff returns how long to wait after the n-th consecutive
// failed connection attempt: exponential from c.ReconnectBackoff up to
// c.MaxReconnectBackoff, with the upper half jittered.
func reconnectBackoff(c *Config, n int) time.Duration {
	d := c.ReconnectBackoff
	for i := 1; i < n && d < c.MaxReconnectBackoff; i++ {
		d *= 2
	}
	d = min(d, c.MaxReconnectBackoff)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// prepare moves what is queued into the next batch for the write
// goroutine: runs of PUBs to one topic become one MPUB (automatic batching),
// up to MaxBatchMessages and the batch byte limit.
func (r *router) prepare() {
	maxCount := 1
	if r.config.AutoBatch {
		maxCount = r.config.MaxBatchMessages
	}
	if len(r.prep) == 0 {
		r.group = -1
	}
	for r.queue.len() > 0 {
		tx := r.queue.popFront()
		if tx.ctx != nil && tx.ctx.Err() != nil {
			r.settle(tx, &ctxError{ctx: tx.ctx, class: ErrNeverSent})
			continue
		}
		if tx.kind == kindNOP {
			r.pings = append(r.pings, tx)
			continue
		}
		tx.stage = stagePrepared
		if tx.placeholder() {
			// Not sent: it completes, in order, once everything before it
			// has.
			switch {
			case len(r.prep) > 0:
				// It goes to pending behind the prepared batch, once that
				// is handed off: stop here.
				r.queue.pushFront(tx)
				r.prepStop = true
				return
			case r.pending.len() == 0:
				r.settle(tx, nil) // nothing before it is unanswered
			default:
				r.pending.pushBack(tx)
			}
			continue
		}
		batchable := (tx.kind == kindPUB || tx.kind == kindMPUB) && !tx.noBatch
		if batchable && r.group >= 0 {
			head := r.prep[r.group]
			if tx.topic == head.topic && head.groupCount+tx.messages() <= maxCount &&
				head.groupSize+tx.mpubPart() <= int64(r.batchBytes) {
				head.n++
				head.groupCount += tx.messages()
				head.groupSize += tx.mpubPart()
				tx.n = 0 // it may have headed a command on an earlier connection
				r.prep = append(r.prep, tx)
				r.prepMsgs += tx.messages()
				r.prepBytes += tx.size
				if tx.ctx != nil {
					r.prepCtx++
				}
				continue
			}
		}
		tx.n = 1
		r.prep = append(r.prep, tx)
		r.prepMsgs += tx.messages()
		r.prepBytes += tx.size
		r.group = -1
		if tx.ctx != nil {
			r.prepCtx++
		}
		if batchable {
			r.group = len(r.prep) - 1
			tx.groupCount = tx.messages()
			tx.groupSize = 4 + tx.mpubPart() // the count, then the sized messages
		}
	}
}

// popPending removes the oldest pending transaction.
func (r *router) popPending() *ProducerTransaction {
	tx := r.pending.popFront()
	if tx.lastOfWrite {
		tx.lastOfWrite = false
		r.writesInFlight--
	}
	return tx
}

// unprepare puts the prepared batch, which never reached the socket, back
// at the front of the queue, for the next connection.
func (r *router) unprepare() {
	for i := len(r.prep) - 1; i >= 0; i-- {
		r.prep[i].stage = stageQueued
		r.queue.pushFront(r.prep[i])
	}
	clear(r.prep)
	r.prep, r.prepCtx = r.prep[:0], 0
	r.prepMsgs, r.prepBytes, r.prepStop = 0, 0, false
	for _, tx := range r.pings {
		r.queue.pushFront(tx)
	}
	r.pings = nil
}

// handedOff records that the write goroutine took the prepared batch: its
// publishes now await nsqd's answers, in order.
func (r *router) handedOff() {
	now := r.stats.now()
	r.pings = nil // the write goroutine's now
	r.handed++
	r.prepCtx = 0
	r.prepMsgs, r.prepBytes, r.prepStop = 0, 0, false
	for _, tx := range r.prep {
		tx.stage, tx.batch = stageHanded, r.handed
		if tx.n > 1 {
			r.stats.batches.Add(1)
			r.stats.batched.Add(uint64(tx.groupCount))
		}
		tx.sentAt = now
		r.pending.pushBack(tx)
	}
	if len(r.prep) > 0 {
		r.prep[len(r.prep)-1].lastOfWrite = true
		r.writesInFlight++
	}
	// The write goroutine took this batch, so it is done with the one
	// before: that becomes the next. It reported on it before taking this
	// one (and may have reported on this one already).
	clear(r.spare)
	r.prep, r.spare = r.spare[:0], r.prep
	r.drainWritten()
}

func (r *router) onResponse(data []byte) {
	if r.closing {
		return
	}
	if string(data) != respOK {
		r.closeConn(&FrameError{Reason: fmt.Sprintf("unexpected response %q to a publish", data)})
		return
	}
	if r.pending.len() == 0 {
		r.closeConn(&FrameError{Reason: "nsqd answered OK with no command pending"})
		return
	}
	r.proven = true
	head := r.pending.peek(0)
	r.stats.addLatency(r.stats.now() - head.sentAt)
	// Counted at once (two atomic adds per answer, not per publish),
	// before any of them is delivered.
	var msgs, bytes uint64
	for i := 0; i < head.n; i++ {
		m, b := published(r.pending.peek(i))
		msgs, bytes = msgs+m, bytes+b
	}
	r.stats.published.Add(msgs)
	r.stats.publishedBytes.Add(bytes)
	for n := head.n; n > 0; n-- {
		r.deliverCounted(r.popPending(), nil)
	}
	r.popPlaceholders()
}

// onErrorFrame handles an error frame. nsqd closes the connection after any
// error to a publish, without executing the commands pipelined behind the
// failed one: only the failed command fails, the rest are sent again on a
// new connection.
func (r *router) onErrorFrame(data []byte) {
	if r.closing {
		return
	}
	perr := ErrProtocol{Reason: string(data)}
	if r.pending.len() == 0 {
		r.closeConn(fmt.Errorf("nsq: nsqd sent an error with no command pending: %w", perr))
		return
	}
	r.proven = true
	head := r.pending.peek(0)
	n := head.n
	code := perr.Code()
	var retry txQueue
	learnedMsg, learnedBody := r.learn(perr)
	switch {
	case n > 1 && learnedMsg > 0 && groupExceeds(&r.pending, n, learnedMsg):
		// An automatic batch with a message over nsqd's --max-msg-size:
		// nsqd names the first one too big, and stored nothing. Fail the
		// too big ones, send the others again.
		blamed := false
		for ; n > 0; n-- {
			tx := r.popPending()
			// The too big ones keep their place, settled: they complete in
			// order, without being sent.
			switch largest := tx.largest(); {
			case largest <= learnedMsg:
			case !blamed:
				blamed = true
				tx.settled = perr
			default:
				tx.settled = neverSent(learnedTooBig("message body", largest, "--max-msg-size", learnedMsg))
			}
			retry.pushBack(tx)
		}
		r.log(LogLevelError, "(%s) nsqd refused a batch: %s; its other messages are sent again", r.addr, perr)
	case n > 1 && learnedBody > 0:
		// An automatic batch over nsqd's --max-body-size: smaller batches.
		r.batchBytes = min(r.batchBytes, int(learnedBody))
		r.log(LogLevelWarning, "(%s) nsqd refused a batch of %d messages (%s); batches are now at most %d bytes", r.addr, n, perr, r.batchBytes)
		for ; n > 0; n-- {
			retry.pushBack(r.popPending())
		}
	case n > 1 && (code == "E_BAD_MESSAGE" || code == "E_BAD_BODY"):
		// An automatic batch that nsqd refused as a whole stored nothing:
		// send its messages one by one, so that only the bad one fails.
		if code == "E_BAD_BODY" && r.batchBytes > 1024 {
			r.batchBytes /= 2
			r.log(LogLevelWarning, "(%s) nsqd refused a batch of %d messages (%s); batches are now at most %d bytes: set max_batch_bytes below nsqd's --max-body-size", r.addr, n, perr, r.batchBytes)
		}
		for ; n > 0; n-- {
			tx := r.popPending()
			tx.noBatch = true
			retry.pushBack(tx)
		}
	default:
		// nsqd may refuse a command before reading all of it, while the
		// write goroutine still writes its body: complete it (and let the
		// caller reuse the body) only once that goroutine has exited.
		r.log(LogLevelError, "(%s) nsqd refused a publish: %s", r.addr, perr)
		err := error(perr)
		if code == "E_MPUB_FAILED" {
			// nsqd stores an MPUB's messages one by one and may have stored
			// some before failing.
			err = unknownOutcome(perr)
		}
		for ; n > 0; n-- {
			tx := r.popPending()
			tx.settled = err
			r.refused = append(r.refused, tx)
		}
	}
	if r.pending.len() > 0 {
		r.log(LogLevelInfo, "(%s) resending the %d commands nsqd did not execute", r.addr, r.pending.len())
	}
	for r.pending.len() > 0 {
		retry.pushBack(r.popPending())
	}
	r.unprepare()
	for i := 0; i < retry.len(); i++ {
		retry.peek(i).stage = stageRetry
	}
	r.queue.prependAll(&retry)
	if learnedMsg > 0 || learnedBody > 0 {
		r.settleOverLimits()
	}
	r.closeConn(perr)
}

// settleOverLimits settles, in the queue, the publishes over the limits
// nsqd has just stated (accepted before it did): each would cost the next
// connection for a refusal known already.
func (r *router) settleOverLimits() {
	maxMsg, maxBody := r.learned.maxMsg.Load(), r.learned.maxBody.Load()
	for i := 0; i < r.queue.len(); i++ {
		tx := r.queue.peek(i)
		if tx.placeholder() {
			continue
		}
		switch {
		case tx.kind == kindMPUB && maxBody > 0 && tx.size > maxBody:
			tx.settled = neverSent(learnedTooBig("MPUB body", tx.size, "--max-body-size", maxBody))
		case tx.kind == kindMPUB && maxMsg > 0:
			for _, b := range tx.bodies { // a sync MPUB's; an async one's are encoded
				if int64(len(b)) > maxMsg {
					tx.settled = neverSent(learnedTooBig("message body", int64(len(b)), "--max-msg-size", maxMsg))
					break
				}
			}
		case tx.kind != kindMPUB && maxMsg > 0 && int64(len(tx.body)) > maxMsg:
			tx.settled = neverSent(learnedTooBig("message body", int64(len(tx.body)), "--max-msg-size", maxMsg))
		}
	}
}

// popPlaceholders completes the placeholders (Flush barriers, settled
// transactions) that have reached the front of the pending FIFO: everything
// before them has completed.
func (r *router) popPlaceholders() {
	for r.pending.len() > 0 && r.pending.peek(0).placeholder() {
		r.settle(r.popPending(), nil)
	}
}

// closeConn starts tearing the connection down; onClosed finishes.
func (r *router) closeConn(err error) {
	if r.conn == nil || r.closing {
		return
	}
	if err != ErrStopped {
		r.log(LogLevelWarning, "(%s) closing the connection: %s", r.addr, err)
	}
	r.closing = true
	r.conn.teardown(err)
}

// onClosed settles everything the closed connection held: what was written
// and not answered has an unknown outcome; what was handed to the write
// goroutine but never written is queued again. A connection that ended
// before it proved itself counts as a failed attempt.
func (r *router) onClosed(c *Conn) {
	switch c {
	case r.conn:
	case r.attempt:
		r.attemptClosed = true // its result, still to come, is a failure
		return
	default:
		r.impossible("OnClose of a Conn that is neither in use nor connecting")
		return
	}
	err := c.closeErr()
	if !r.closing {
		r.log(LogLevelError, "(%s) connection lost: %s", r.addr, err)
	}
	// The write goroutine reported every batch it took before it exited.
	r.drainWritten()
	if r.written < r.handed {
		r.impossible("a closed Conn's write goroutine did not report %d batches", r.handed-r.written)
		r.written = r.handed
	}
	if len(r.withdrawn) > 0 {
		r.impossible("%d withdrawn publishes unanswered after their Conn closed", len(r.withdrawn))
	}
	for _, tx := range r.refused {
		r.complete(tx, tx.settled)
	}
	clear(r.refused)
	r.refused = r.refused[:0]
	r.unprepare()
	// What the write goroutine took after the teardown was never written:
	// it goes back to the front of the queue, in order, for the next
	// connection (or fails with the queue, if that connection cannot be
	// made), as the commands nsqd did not execute after an error frame do.
	var retry txQueue
	for r.pending.len() > 0 {
		tx := r.popPending()
		if r.neverWritten(tx) || (retry.len() > 0 && tx.placeholder()) {
			// A placeholder behind it waits for it again.
			tx.stage = stageRetry
			retry.pushBack(tx)
			continue
		}
		if retry.len() > 0 {
			r.impossible("a command written after one never written")
		}
		r.settle(tx, unknownOutcome(err))
	}
	r.queue.prependAll(&retry)
	r.conn, r.connected, r.closing, r.unwritten = nil, false, false, 0
	switch {
	case r.proven || time.Since(r.connectedAt) >= provingTime:
		r.failures = 0
	case !errors.Is(err, ErrStopped): // not Stop's own close
		r.failed("connection ended before nsqd answered on it - %s", err)
	}
}

// onWritten records that the write goroutine is done with the oldest batch
// it had not reported, and answers the withdrawn publishes that waited for
// it.
func (r *router) onWritten(err error) {
	r.written++
	if r.written > r.handed {
		r.impossible("the write goroutine reported batch %d, only %d were handed", r.written, r.handed)
	}
	if errors.Is(err, errNotWritten) && r.unwritten == 0 {
		r.unwritten = r.written
	}
	kept := r.withdrawn[:0]
	for _, tx := range r.withdrawn {
		if tx.batch <= r.written {
			r.answerWithdrawn(tx)
		} else {
			kept = append(kept, tx)
		}
	}
	clear(r.withdrawn[len(kept):])
	r.withdrawn = kept
}

// drainWritten reads the write goroutine's reports that have arrived.
func (r *router) drainWritten() {
	for {
		select {
		case err := <-r.writtenChan:
			r.onWritten(err)
		default:
			return
		}
	}
}

// neverWritten reports whether no byte of tx, handed to the write goroutine,
// was written: the goroutine took its batch after its Conn was closed.
func (r *router) neverWritten(tx *ProducerTransaction) bool {
	return r.unwritten != 0 && tx.batch >= r.unwritten
}

// withdraw answers a sync publish whose caller's context ended: its caller
// returns with the answer. A publish not yet handed to the write goroutine
// is never sent; one handed is answered once the write goroutine is done
// with its batch, so that the caller may reuse the body when it returns.
func (r *router) withdraw(tx *ProducerTransaction) {
	switch {
	case tx.stage == stageDone:
		// Its result is on its way to the caller.
	case (tx.stage == stageHanded || tx.stage == stageRetry) && tx.batch > r.written:
		r.withdrawn = append(r.withdrawn, tx)
	default:
		r.answerWithdrawn(tx)
	}
}

// answerWithdrawn gives the caller of a withdrawn publish its answer: what
// is known of it now. The transaction stays where it is, and completes (for
// the stats and the pending limits) when its turn comes.
func (r *router) answerWithdrawn(tx *ProducerTransaction) {
	if tx.stage == stageDone {
		// nsqd answered while it waited for the write goroutine's report:
		// its caller has that answer.
		return
	}
	var err error
	switch {
	case tx.settled != nil:
		err = tx.settled
	case tx.stage == stageHanded && !r.neverWritten(tx):
		err = &ctxError{ctx: tx.ctx, class: ErrUnknownOutcome}
	default:
		// Not handed, or handed and not written, or written and not
		// executed by nsqd (it refused a command before it): it will not be
		// sent again, its context having ended.
		err = &ctxError{ctx: tx.ctx, class: ErrNeverSent}
	}
	if tx.stage == stagePrepared {
		defer r.dropEnded()
	}
	tx.Error, tx.withdrawn = err, true
	tx.doneChan <- tx // capacity 1 and ours: never blocks
}

// dropEnded takes the publishes whose context has ended out of the
// prepared batch, before it is handed off.
func (r *router) dropEnded() {
	if r.closing || len(r.prep) == 0 {
		return
	}
	for _, tx := range r.prep {
		if tx.ctx != nil && tx.ctx.Err() != nil {
			r.unprepare()
			r.prepare() // completes them
			return
		}
	}
}

// expire ends Stop's wait: what is queued fails as never sent, the
// connection is closed (what it holds fails as unknown), a connection
// attempt is cancelled.
func (r *router) expire() {
	r.expired = true
	n := r.queue.len() + r.pending.len()
	if n > 0 || r.carrying > 0 {
		r.log(LogLevelWarning, "(%s) stop_timeout (%s): %d publishes still unanswered, results for %d doneChans not taken",
			r.addr, r.config.StopTimeout, n, r.carrying)
	}
	if r.connecting {
		r.cancelConnect()
	}
	r.closeConn(errStopTimeout)
	close(r.abandonChan) // couriers drop what they still carry
}

// complete records a transaction's outcome and delivers it: at once when its
// doneChan has room, else through that channel's courier, which keeps its
// results in order without ever blocking the router. Its room under the
// pending limits is released now: a result a courier carries counts against
// its doneChan's own backlog instead, so that a channel nobody reads holds
// back only the publishers to it.
func (r *router) complete(tx *ProducerTransaction, err error) {
	r.count(tx, err)
	r.deliverCounted(tx, err)
}

// deliverCounted is complete for a transaction already counted.
func (r *router) deliverCounted(tx *ProducerTransaction, err error) {
	if tx.recycled {
		// Nothing reads the encoded body of a completed publish: nsqd
		// answers only once it has read it all, and a publish that fails
		// without an answer completes once the write goroutine has exited.
		mpubBodies.put(tx.body)
		tx.body, tx.recycled = nil, false
	}
	var rel roomRelease
	rel.add(tx)
	if tx.withdrawn {
		// Its caller has its result and has gone: nothing more is
		// written to it.
		r.release.merge(rel)
		return
	}
	tx.Error, tx.stage = err, stageDone
	ch := tx.doneChan
	// Once sent, tx belongs to its receiver: what the release needs was read
	// before.
	switch {
	case tx.internal:
		// Its caller (a sync call, a Flush) sees the room of everything
		// completed so far released.
		r.release.merge(rel)
		rel = roomRelease{}
		r.carryNow()
		r.release.to(r.limit)
		ch <- tx // capacity 1 and ours: never blocks
	case r.hook != nil:
		r.hook.done(tx) // never blocks
	case ch == nil:
	case r.couriers[ch] != nil:
		// Behind the results the courier still holds, also after
		// stop_timeout (it drops them then): never ahead of them.
		r.carryLater(r.couriers[ch], tx)
	default:
		r.deliver(tx)
	}
	r.release.merge(rel)
}

// carryLater gathers tx for courier c, after the results gathered before
// it; carryNow carries them. Results for another courier carry those first.
func (r *router) carryLater(c *courier, tx *ProducerTransaction) {
	if r.carryTo != c {
		r.carryNow()
		r.carryTo = c
	}
	r.carryRun = append(r.carryRun, tx)
}

// carryNow carries the gathered results to their courier. One that has
// finished meanwhile (it delivered all it held, and takes nothing more)
// leaves them to be delivered as if it had never run, in order.
func (r *router) carryNow() {
	c := r.carryTo
	if c == nil {
		return
	}
	run := r.carryRun
	r.carryTo, r.carryRun = nil, r.carryRun[:0]
	if !c.carryAll(run) {
		for _, tx := range run {
			r.deliver(tx)
		}
	}
	clear(run)
}

// deliver sends an async result to its doneChan (which has no courier
// taking results, or one that has finished), or to a new courier when the
// channel is full.
func (r *router) deliver(tx *ProducerTransaction) {
	ch := tx.doneChan
	switch {
	case r.couriers[ch] != nil && r.couriers[ch].carry(tx):
		// A courier started for an earlier result of this run.
	case r.expired:
		select {
		case ch <- tx:
		default:
			r.log(LogLevelError, "(%s) result dropped after stop_timeout: doneChan not read (error: %v)", r.addr, tx.Error)
		}
	default:
		select {
		case ch <- tx:
		default:
			r.startCourier(ch, tx)
		}
	}
}

// startCourier starts the courier of ch, a doneChan that was full, with its
// first result tx. Its backlog, shared with the publishing calls, makes
// publishers to ch wait while it is full.
func (r *router) startCourier(ch chan *ProducerTransaction, tx *ProducerTransaction) {
	if r.couriers == nil {
		r.couriers = make(map[chan *ProducerTransaction]*courier)
	}
	c := &courier{ch: ch, done: r.eventChan, abandon: r.abandonChan, logs: r.logs, backlog: new(pendingLimit)}
	c.backlog.init(int64(r.config.MaxPending), r.config.MaxPendingBytes)
	c.carry(tx)
	r.couriers[ch] = c
	r.backlogs.Store(ch, c.backlog)
	r.carrying++
	go c.run()
}

// courierDone forgets a courier that has finished.
func (r *router) courierDone(c *courier) {
	r.carrying--
	if r.couriers[c.ch] == c { // else a new one took its place
		delete(r.couriers, c.ch)
		r.backlogs.Delete(c.ch)
	}
}

// count adds a completed transaction to the stats.
func (r *router) count(tx *ProducerTransaction, err error) {
	if tx.kind == kindNOP || tx.kind == kindBarrier {
		return
	}
	s := r.stats
	switch {
	case err == nil:
		msgs, bytes := published(tx)
		s.published.Add(msgs)
		s.publishedBytes.Add(bytes)
	case errors.Is(err, ErrUnknownOutcome): // E_MPUB_FAILED included
		s.unknown.Add(uint64(tx.messages()))
	case errors.Is(err, ErrNeverSent):
		s.neverSent.Add(uint64(tx.messages()))
	default:
		if code, ok := protocolCode(err); ok {
			s.addNsqdError(code)
		}
	}
}

// published returns the messages and message bytes tx publishes.
func published(tx *ProducerTransaction) (msgs, bytes uint64) {
	n := tx.messages()
	if tx.kind == kindMPUB {
		return uint64(n), uint64(tx.size - 4 - 4*int64(n))
	}
	return 1, uint64(tx.size)
}

// protocolCode returns the code of the ErrProtocol in err's chain. (Apart,
// so that the ErrProtocol errors.As needs escapes only on this path.)
func protocolCode(err error) (string, bool) {
	var perr ErrProtocol
	if errors.As(err, &perr) {
		return perr.Code(), true
	}
	return "", false
}

// courier delivers, in order, the results for one doneChan that was full.
type courier struct {
	ch chan *ProducerTransaction

	// Set at creation, read-only.
	done    chan<- routerEvent // told when the courier has finished (the router's eventChan)
	abandon <-chan struct{}    // closed when Stop's wait runs out: drop everything
	backlog *pendingLimit      // the results it holds, bounded like the producer's pending ones
	logs    *logSink

	mu       sync.Mutex
	q        txQueue // guarded by mu
	finished bool    // guarded by mu: the courier has finished and takes nothing more
}

// carry hands a result to the courier; false if it has finished.
func (c *courier) carry(tx *ProducerTransaction) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return false
	}
	c.backlog.take(room(tx))
	c.q.pushBack(tx)
	return true
}

// carryAll hands results to the courier, in order; false (taking none) if
// it has finished.
func (c *courier) carryAll(txs []*ProducerTransaction) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return false
	}
	var rel roomRelease
	for _, tx := range txs {
		rel.add(tx)
		c.q.pushBack(tx)
	}
	c.backlog.take(rel.count, rel.bytes)
	return true
}

func (c *courier) run() {
	defer func() { c.done <- routerEvent{kind: evCourierDone, courier: c} }()
	// It takes everything queued at once, and gives the backlog back the
	// room of what it delivered once per take, or before it waits: in a
	// stream, a lock and a release per take instead of three locks and a
	// release per result.
	var batch txQueue
	for {
		c.mu.Lock()
		if c.q.len() == 0 {
			c.finished = true
			c.mu.Unlock()
			return
		}
		c.q, batch = batch, c.q // batch was empty
		c.mu.Unlock()
		var rel roomRelease
		for batch.len() > 0 {
			tx := batch.peek(0)
			n, bytes := room(tx) // before the send: then tx is its receiver's
			select {
			case c.ch <- tx:
			default:
				rel.to(c.backlog) // what it delivered: publishers may wait for it meanwhile
				select {
				case c.ch <- tx:
				case <-c.abandon:
					c.mu.Lock()
					c.finished = true
					dropped := batch.len() + c.q.len()
					rel = roomRelease{}
					for batch.len() > 0 {
						rel.add(batch.popFront())
					}
					for c.q.len() > 0 {
						rel.add(c.q.popFront())
					}
					c.mu.Unlock()
					rel.to(c.backlog)
					c.logs.log(LogLevelError, "(%s) %d results dropped after stop_timeout: doneChan not read", c.logs.addr, dropped)
					return
				}
			}
			batch.popFront()
			rel.count += n
			rel.bytes += bytes
		}
		rel.to(c.backlog)
	}
}

// learn records the limit an error from nsqd states, and returns it.
func (r *router) learn(perr ErrProtocol) (maxMsg, maxBody int64) {
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
		r.learned.maxMsg.Store(limit)
		return limit, 0
	case strings.Contains(perr.Reason, "body too big"):
		r.learned.maxBody.Store(limit)
		return 0, limit
	}
	return 0, 0
}

// groupExceeds reports whether one of the first n pending transactions has
// a body over limit.
func groupExceeds(q *txQueue, n int, limit int64) bool {
	for i := 0; i < n; i++ {
		if q.peek(i).largest() > limit {
			return true
		}
	}
	return false
}
