package nsq

import (
	"context"
	"encoding/binary"
	"sync"
	"time"
)

// ProducerTransaction is the result of one publish. The *Async methods send
// it on the doneChan they were given once nsqd has answered (or the publish
// has failed): Error is nil only when nsqd answered OK, and Args holds the
// variadic arguments given to the call.
//
// A transaction is delivered exactly once. The transactions sent to one
// doneChan arrive in the order their publishes were accepted; results for
// different doneChans are independent of each other.
type ProducerTransaction struct {
	Error error // nil on success
	Args  []any // the args given to the *Async call

	// Fields below are written by the publishing call before the transaction
	// is handed to the router, then only read, except where noted.
	doneChan chan *ProducerTransaction // where the result goes; nil: dropped
	internal bool                      // doneChan is the producer's own (sync call): sending on it never blocks
	kind     txKind
	topic    string
	body     []byte   // PUB and DPUB body; for an async MPUB, the encoded MPUB body
	bodies   [][]byte // the bodies of a sync MPUB, sent as they are
	delay    time.Duration
	size     int64           // bytes held against Config.MaxPendingBytes
	ctx      context.Context // nil, or the publish's context: not sent once it is done
	recycled bool            // body is MultiPublishAsync's encoded copy, from mpubBodies: the router returns it there on completion

	// Written by the router only. The write goroutine reads n and
	// groupSize of the transactions in a batch it was handed; the router
	// changes them only once that goroutine has exited (a transaction goes
	// back to the queue, to be prepared again, only then).
	n           int           // on the first transaction of a written command: how many transactions the command carries; 0 on the others
	noBatch     bool          // send as a command of its own (its batch was rejected)
	lastOfWrite bool          // the last transaction of a batch handed to the write goroutine
	settled     error         // known outcome, not to be sent: completes with it, in order
	sentAt      time.Duration // on the first transaction of a written command: when it was handed to the writer
	groupSize   int64         // on the first transaction of an automatic MPUB: its body size
	groupCount  int           // on the first transaction of an automatic MPUB: its messages
	stage       txStage       // where it is
	batch       uint64        // the batch it was last handed to the write goroutine in
	withdrawn   bool          // its caller's context ended and the caller has its answer: nothing more is written to it
}

// txStage is where a transaction is, from the router's point of view.
type txStage uint8

const (
	stageQueued   txStage = iota // accepted, not prepared
	stagePrepared                // in the next batch for the write goroutine, or a placeholder in pending
	stageHanded                  // handed to the write goroutine, in batch
	stageRetry                   // queued again after being handed in batch: nsqd did not execute it
	stageDone                    // completed
)

// holdsRoom reports whether the transaction holds room under the pending
// limits (Config.MaxPending, MaxPendingBytes) from its call until its
// result is delivered: every publish does; Ping and Flush do not, so that
// they work when the limits are reached.
func (tx *ProducerTransaction) holdsRoom() bool {
	return tx.kind != kindNOP && tx.kind != kindBarrier
}

// placeholder reports whether the transaction is not to be written: a
// Flush barrier, or a publish whose outcome is settled already. It only
// keeps its place in the FIFO, and completes (with settled) once everything
// before it has.
func (tx *ProducerTransaction) placeholder() bool {
	return tx.kind == kindBarrier || tx.settled != nil
}

// messages returns how many messages the transaction publishes.
func (tx *ProducerTransaction) messages() int {
	if tx.kind != kindMPUB {
		return 1
	}
	if tx.bodies != nil {
		return len(tx.bodies)
	}
	return int(binary.BigEndian.Uint32(tx.body))
}

// mpubPart returns how many bytes the transaction's messages take in an
// MPUB body, each with its size and without the body's count.
func (tx *ProducerTransaction) mpubPart() int64 {
	if tx.kind == kindMPUB {
		return tx.size - 4 // its own MPUB body's size, less its count
	}
	return 4 + int64(len(tx.body))
}

// largest returns the size of the transaction's largest message.
func (tx *ProducerTransaction) largest() int64 {
	switch {
	case tx.kind != kindMPUB:
		return int64(len(tx.body))
	case tx.bodies != nil:
		m := 0
		for _, b := range tx.bodies {
			m = max(m, len(b))
		}
		return int64(m)
	}
	// An encoded MPUB body: the count, then each message after its size.
	m := int64(0)
	for rest := tx.body[4:]; len(rest) >= 4; {
		n := int64(binary.BigEndian.Uint32(rest))
		m = max(m, n)
		rest = rest[4+n:]
	}
	return m
}

// txKind is what a transaction asks nsqd to do.
type txKind uint8

const (
	kindPUB     txKind = iota // PUB, or one message of an automatic MPUB batch
	kindDPUB                  // DPUB
	kindMPUB                  // a MultiPublish: bodies (sync) or body (async, encoded)
	kindNOP                   // Ping: a NOP, complete once written
	kindBarrier               // Flush: completes once everything before it has
)

// syncTxPool recycles the transactions of synchronous calls, each with its
// own capacity-1 done channel, so a sync publish allocates nothing.
var syncTxPool = sync.Pool{New: func() any {
	tx := &ProducerTransaction{internal: true}
	tx.doneChan = make(chan *ProducerTransaction, 1)
	return tx
}}

func getSyncTx() *ProducerTransaction {
	return syncTxPool.Get().(*ProducerTransaction)
}

// putSyncTx returns a completed sync transaction to the pool. Only the caller
// that received it from its done channel may do this.
func putSyncTx(tx *ProducerTransaction) {
	done := tx.doneChan
	*tx = ProducerTransaction{doneChan: done, internal: true}
	syncTxPool.Put(tx)
}

// txQueue is a FIFO of transactions on a ring buffer. Not safe for concurrent
// use: each queue has one owner.
type txQueue struct {
	buf  []*ProducerTransaction
	head int
	n    int
}

func (q *txQueue) len() int { return q.n }

func (q *txQueue) grow() {
	size := max(2*len(q.buf), 64)
	buf := make([]*ProducerTransaction, size)
	for i := 0; i < q.n; i++ {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}

func (q *txQueue) pushBack(tx *ProducerTransaction) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = tx
	q.n++
}

func (q *txQueue) pushFront(tx *ProducerTransaction) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.head = (q.head - 1 + len(q.buf)) % len(q.buf)
	q.buf[q.head] = tx
	q.n++
}

// peek returns the i-th transaction from the front.
func (q *txQueue) peek(i int) *ProducerTransaction {
	return q.buf[(q.head+i)%len(q.buf)]
}

func (q *txQueue) popFront() *ProducerTransaction {
	tx := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return tx
}

// popBack removes and returns the last transaction.
func (q *txQueue) popBack() *ProducerTransaction {
	i := (q.head + q.n - 1) % len(q.buf)
	tx := q.buf[i]
	q.buf[i] = nil
	q.n--
	return tx
}

// prependAll moves every transaction of from, in order, to the front of q.
func (q *txQueue) prependAll(from *txQueue) {
	for from.len() > 0 {
		q.pushFront(from.popBack())
	}
}

// roomRelease adds up the room that delivered transactions give back under
// the pending limits, to return it in one call. It is the one place that
// knows what a transaction holds.
type roomRelease struct{ count, bytes int64 }

// add counts the room tx holds. Call it before tx is delivered: then tx
// belongs to its receiver.
func (r *roomRelease) add(tx *ProducerTransaction) {
	n, bytes := room(tx)
	r.count += n
	r.bytes += bytes
}

// room returns the room tx holds under a pending limit: one publish and its
// bytes, or nothing.
func room(tx *ProducerTransaction) (n, bytes int64) {
	if tx.holdsRoom() {
		return 1, tx.size
	}
	return 0, 0
}

// merge adds o.
func (r *roomRelease) merge(o roomRelease) {
	r.count += o.count
	r.bytes += o.bytes
}

// to gives the room counted so far back to l, and starts over.
func (r *roomRelease) to(l *pendingLimit) {
	if r.count > 0 {
		l.release(r.count, r.bytes)
		*r = roomRelease{}
	}
}
