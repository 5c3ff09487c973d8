package nsq

import (
	"context"
	"errors"
	"sort"
	"sync/atomic"
)

// txHook connects a Producer's router to a ProducerPool (set on each
// node's Producer). The router calls done for each result of an async
// publish, in order, in place of its doneChan, and flush once per pass of
// its loop, after that pass's results. flush returns the publishes handed
// to the Producer since the last call, in order, their room under its
// pending limits taken: the router accepts them as if they had come through
// transactionChan. A nil transaction on transactionChan wakes an idle
// router for its hook: the router skips it, and the pass it makes flushes.
// None of these may block the router for long: flush may wait for the
// pool's mu, which is never held while waiting for a router.
type txHook interface {
	done(tx *ProducerTransaction)
	flush() []*ProducerTransaction
}

// nodeHook is a node Producer's txHook: the node's side of the pool's
// queue. On the router's goroutine, once per pass, it settles the pass's
// results under one lock, dispatches what they made room for (to this node
// and the others), takes this node's share (its box) in the same lock, and
// hands the results to their callers: one lock and one wake-up per batch,
// not per publish, and no hop through another goroutine.
type nodeHook struct {
	p    *ProducerPool
	n    *poolNode
	txs  []*ProducerTransaction // the pass's results; router goroutine only
	out  []*poolTx              // reused by flush; router goroutine only
	box  []*poolTx              // reused by flush; router goroutine only
	free []*poolTx              // blank async poolTxs of the last flush's results, for the pool's free list; router goroutine only
	pull []*ProducerTransaction // what flush returned last; router goroutine only
}

func (h *nodeHook) done(tx *ProducerTransaction) { h.txs = append(h.txs, tx) }

func (h *nodeHook) flush() []*ProducerTransaction {
	clear(h.pull)
	h.pull = h.pull[:0]
	p, n := h.p, h.n
	if len(h.txs) == 0 && !n.boxed.Load() {
		return nil
	}
	out := h.out[:0]
	p.mu.Lock()
	if len(h.free) > 0 {
		k := min(len(h.free), poolFreeMax-len(p.free))
		p.free = append(p.free, h.free[:k]...)
		for _, t := range h.free[k:] {
			asyncTxs.Put(t) // blank already
		}
		clear(h.free)
		h.free = h.free[:0]
	}
	for _, tx := range h.txs {
		t := tx.Args[0].(*poolTx)
		t.result = tx
		out = p.settleLocked(n, t, tx.Error, out)
	}
	p.dispatchLocked(n)
	box := n.takeBoxLocked(h.box[:0])
	p.mu.Unlock()
	clear(h.txs)
	h.txs = h.txs[:0]
	p.deliverTo(out, &h.free)
	clear(out)
	h.out = out[:0]
	if len(box) > 0 {
		h.pull = n.handOver(box, h.pull)
	}
	clear(box)
	h.box = box[:0]
	return h.pull
}

// handOver returns the Producer's transactions for the publishes of box,
// taken from the node's box, appended to txs, with their room taken under
// the Producer's limits. A publish the Producer refuses (over a size limit
// nsqd stated on this connection) is settled with its error instead, never
// sent (ErrTooLarge and ErrNeverSent, as a Producer's queued publishes
// end): the pool accepted it.
func (n *poolNode) handOver(box []*poolTx, txs []*ProducerTransaction) []*ProducerTransaction {
	pr := n.producer
	var refused []*poolTx
	var errs []error
	var count, bytes int64
	for _, t := range box {
		tx, err := n.producerTx(t)
		if err != nil {
			pr.stats.refused.Add(1)
			refused, errs = append(refused, t), append(errs, neverSent(err))
			continue
		}
		count, bytes = count+1, bytes+tx.size
		txs = append(txs, tx)
	}
	if count > 0 {
		pr.limit.take(count, bytes)
	}
	if len(refused) > 0 {
		p := n.pool
		var out []*poolTx
		p.mu.Lock()
		for i, t := range refused {
			out = p.settleLocked(n, t, errs[i], out)
		}
		p.dispatchLocked(nil)
		p.mu.Unlock()
		p.deliver(out)
	}
	return txs
}

// producerTx returns the node Producer's transaction for t, checked as the
// Producer checks a publish at the call (the pool checked the rest): its
// result comes back through the hook, with t in Args.
func (n *poolNode) producerTx(t *poolTx) (*ProducerTransaction, error) {
	pr := n.producer
	t.nodeArgs[0] = t
	tx := &ProducerTransaction{Args: t.nodeArgs[:], topic: t.topic}
	switch t.kind {
	case poolPUB:
		if max := pr.learned.maxMsg.Load(); max > 0 && int64(len(t.body)) > max {
			return nil, learnedTooBig("message body", int64(len(t.body)), "--max-msg-size", max)
		}
		tx.kind, tx.body, tx.size = kindPUB, t.body, int64(len(t.body))
	case poolDPUB:
		size, err := pr.check(kindDPUB, t.topic, t.delay, t.body, nil)
		if err != nil {
			return nil, err
		}
		tx.kind, tx.delay, tx.body, tx.size = kindDPUB, t.delay, t.body, size
	default:
		size, err := pr.check(kindMPUB, t.topic, 0, nil, t.bodies)
		if err != nil {
			return nil, err
		}
		// Encoded for this node, as Producer.MultiPublishAsync does; the
		// router recycles it. t keeps the bodies in case it moves.
		tx.kind, tx.body, tx.size, tx.recycled = kindMPUB, appendMPUBBody(mpubBodies.get(size), t.bodies), size, true
	}
	return tx, nil
}

// nodeState is where a pool's node stands.
type nodeState uint8

const (
	nodeConnecting nodeState = iota // connecting, first or again after an unknown outcome: takes nothing yet
	nodeUp                          // connected: takes publishes
	nodeDown                        // failed to connect: takes nothing; its Producer retries with backoff
	nodeRemoved                     // leaving the pool: takes nothing; its Producer is stopping
)

func (s nodeState) String() string {
	switch s {
	case nodeConnecting:
		return "connecting"
	case nodeUp:
		return "up"
	case nodeDown:
		return "down"
	}
	return "removed"
}

// poolNode is one nsqd of a pool, and the Producer that publishes to it.
type poolNode struct {
	addr     string
	pool     *ProducerPool
	producer *Producer
	static   bool          // given to NewProducerPool: nsqlookupd never removes it
	kick     chan struct{} // capacity 1: the node's state changed
	boxed    atomic.Bool   // its box has publishes: set and cleared under ProducerPool.mu
	exited   chan struct{} // closed when the node's goroutine has exited

	// Guarded by ProducerPool.mu.
	state    nodeState
	launched bool // its goroutine was started
	// box holds the async publishes given to the node and not yet taken by
	// its router (the hook takes them all at once), in the order the pool
	// took them from its queue.
	box []*poolTx
	// parked holds the sync publishes given to the node while its box
	// held async ones: their callers publish once the router has taken
	// the box (takeBoxLocked), so the node sends publishes in the order
	// the pool gave them to it.
	parked                                  []*poolTx
	held                                    int   // messages given to the node (boxed or handed to the Producer) and not settled
	heldSize                                int64 // their bytes
	published, unknown, neverSent, rerouted uint64
	lastErr                                 error
	keyQ                                    poolQueue       // keyed publishes waiting for room on it, in order
	missed                                  int             // consecutive nsqlookupd answers without it
	tombstoned                              map[string]bool // topics nsqlookupd says it tombstoned
}

// addNodeLocked adds a node and starts connecting to it.
func (p *ProducerPool) addNodeLocked(addr string, static bool) *poolNode {
	if n := p.byAddr[addr]; n != nil && n.state != nodeRemoved {
		n.static = n.static || static
		return n
	}
	// The pool bounds what a node holds (its window); the node's Producer
	// gets twice that room, so handing it a publish never waits on it.
	cfg := p.config
	cfg.MaxPending = 2*p.window + 1
	cfg.MaxPendingBytes = 2*p.windowSize + 1
	pr, err := NewProducer(addr, &cfg)
	if err != nil {
		// The pool's config was validated: a refusal here is a bug.
		panic("nsq: ProducerPool: " + err.Error())
	}
	p.forwardLogs(pr)
	n := &poolNode{
		addr:     addr,
		pool:     p,
		producer: pr,
		static:   static,
		kick:     make(chan struct{}, 1),
		exited:   make(chan struct{}),
	}
	pr.hook = &nodeHook{p: p, n: n} // before any publish starts its router
	p.nodes = append(p.nodes, n)
	p.byAddr[addr] = n
	if static {
		p.log(LogLevelDebug, "nsqd %s joins the pool", addr)
	} else {
		p.log(LogLevelInfo, "nsqd %s joins the pool (from nsqlookupd)", addr)
	}
	if p.started {
		p.launchLocked(n)
	}
	return n
}

// launchLocked starts the node's goroutine, which connects it.
func (p *ProducerPool) launchLocked(n *poolNode) {
	n.launched = true
	p.wg.Add(1)
	go p.runNode(n)
}

// start starts connecting the nodes, once: at the first publish, Flush,
// SetLogger, SetLoggerForLevel or SetLoggerLevel, so that a logger set
// right after NewProducerPool sees every line of the nodes' Producers.
func (p *ProducerPool) start() {
	if p.live.Load() {
		return
	}
	p.mu.Lock()
	if !p.started {
		p.started = true
		for _, n := range p.nodes {
			if !n.launched {
				p.launchLocked(n)
			}
		}
	}
	p.mu.Unlock()
	p.live.Store(true)
}

// hasRoom reports whether n may take t now. A node holding nothing takes
// any publish, however large.
func (n *poolNode) hasRoom(p *ProducerPool, t *poolTx) bool {
	return n.held == 0 || (n.held+t.msgs <= p.window && n.heldSize+t.size <= p.windowSize)
}

// giveLocked puts an async publish in the node's box, and wakes its
// router unless self (the node whose hook is dispatching, which takes its
// box next) is the node.
func (n *poolNode) giveLocked(t *poolTx, self *poolNode) {
	n.box = append(n.box, t)
	if len(n.box) > 1 {
		return
	}
	n.boxed.Store(true)
	if n != self {
		// A full inbox wakes the router anyway.
		select {
		case n.producer.transactionChan <- nil:
		default:
		}
	}
}

// takeBoxLocked moves the node's box to buf, for its router.
func (n *poolNode) takeBoxLocked(buf []*poolTx) []*poolTx {
	if len(n.box) == 0 {
		return buf
	}
	buf = append(buf, n.box...)
	clear(n.box)
	n.box = n.box[:0]
	n.boxed.Store(false)
	// The router accepts the box before it reads its inbox again: the
	// sync publishes given after it may go now.
	for _, t := range n.parked {
		t.parked = false
		t.wake <- n // capacity 1: nothing else is pending on it
	}
	clear(n.parked)
	n.parked = n.parked[:0]
	return buf
}

// publishSync publishes t on the node's Producer and waits for its answer.
func (n *poolNode) publishSync(ctx context.Context, t *poolTx) error {
	switch t.kind {
	case poolMPUB:
		return n.producer.MultiPublishContext(ctx, t.topic, t.bodies)
	case poolDPUB:
		return n.producer.DeferredPublishContext(ctx, t.topic, t.delay, t.body)
	}
	return n.producer.PublishContext(ctx, t.topic, t.body)
}

func (n *poolNode) setStateLocked(p *ProducerPool, s nodeState) {
	if n.state == s || n.state == nodeRemoved {
		return
	}
	switch s {
	case nodeUp:
		p.log(LogLevelInfo, "nsqd %s is up", n.addr)
	case nodeDown:
		p.log(LogLevelWarning, "nsqd %s is down: %v", n.addr, n.lastErr)
	case nodeConnecting:
		p.log(LogLevelWarning, "nsqd %s takes nothing until it has connected again: %v", n.addr, n.lastErr)
	}
	if n.state == nodeUp {
		n.requeueLocked(p)
	}
	n.state = s
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// requeueLocked sends what waits for a node that takes nothing more back
// to the front of the pool's queue, in order, for other nodes: its box
// (never handed to its Producer: not an attempt), then the keyed publishes
// waiting for room on it, for the keys' next node.
func (n *poolNode) requeueLocked(p *ProducerPool) {
	if len(n.box) == 0 && len(n.parked) == 0 && n.keyQ.len() == 0 {
		return
	}
	var q poolQueue
	for _, t := range n.box {
		n.held -= t.msgs
		n.heldSize -= t.size
		p.held -= t.msgs
		t.node = nil
		t.attempts--
		q.pushBack(t)
	}
	clear(n.box)
	n.box = n.box[:0]
	n.boxed.Store(false)
	for _, t := range n.parked {
		n.held -= t.msgs
		n.heldSize -= t.size
		p.held -= t.msgs
		t.node = nil
		t.parked = false
		t.attempts--
		q.pushBack(t)
	}
	clear(n.parked)
	n.parked = n.parked[:0]
	for n.keyQ.len() > 0 {
		q.pushBack(n.keyQ.popFront())
	}
	for p.retryQ.len() > 0 {
		q.pushBack(p.retryQ.popFront())
	}
	p.retryQ = q
	p.checkIdleLocked()
}

// removeLocked takes the node out of the pool: it takes nothing more, its
// Producer is stopped (answering what it holds) and the node's goroutine
// exits.
func (n *poolNode) removeLocked(p *ProducerPool) {
	if n.state == nodeRemoved {
		return
	}
	n.requeueLocked(p)
	n.state = nodeRemoved
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// runNode is a node's goroutine: it connects the node (Ping) while it is
// not up, and stops the Producer once the node is removed. (Its results
// settle on its router's goroutine, through its hook.)
func (p *ProducerPool) runNode(n *poolNode) {
	defer p.wg.Done()
	defer close(n.exited)
	probeDone := make(chan error, 1)
	probing := false
	// A probe waiting out its Producer's backoff is withdrawn when the node
	// leaves: the pool's Stop does not wait for it.
	probeCtx, cancelProbe := context.WithCancel(context.Background())
	defer cancelProbe()
	for {
		p.mu.Lock()
		st := n.state
		p.mu.Unlock()
		if st == nodeRemoved {
			break
		}
		if st != nodeUp && !probing {
			// Ping connects; a Producer that failed to connect waits out
			// its backoff first, so this never hammers a dead node.
			probing = true
			go func() { probeDone <- n.pingContext(probeCtx) }()
		}
		select {
		case err := <-probeDone:
			probing = false
			p.onProbe(n, err)
		case <-n.kick:
		}
	}
	// Its box went back to the pool's queue when it was removed: its
	// Producer has what it took, and answers it as it stops.
	cancelProbe()
	n.producer.Stop()
	if probing {
		<-probeDone
	}
	p.mu.Lock()
	for i, m := range p.nodes {
		if m == n {
			p.nodes = append(p.nodes[:i], p.nodes[i+1:]...)
			break
		}
	}
	if p.byAddr[n.addr] == n {
		delete(p.byAddr, n.addr)
	}
	p.mu.Unlock()
	p.log(LogLevelInfo, "nsqd %s has left the pool", n.addr)
}

// pingContext is the node Producer's Ping, withdrawn when ctx ends.
func (n *poolNode) pingContext(ctx context.Context) error {
	tx := getSyncTx()
	tx.kind = kindNOP
	tx.ctx = ctx
	return n.producer.do(ctx, tx)
}

// onProbe records whether the node connected.
func (p *ProducerPool) onProbe(n *poolNode, err error) {
	var out []*poolTx
	p.mu.Lock()
	switch {
	case n.state == nodeRemoved:
	case err == nil:
		n.setStateLocked(p, nodeUp)
		p.dispatchLocked(nil)
	default:
		n.lastErr = err
		if errors.Is(err, ErrNeverSent) {
			p.lastErr = err
		} else {
			p.lastErr = neverSentf(err)
		}
		n.setStateLocked(p, nodeDown)
		out = p.failIfHopelessLocked()
	}
	p.mu.Unlock()
	p.deliver(out)
}

// ProducerPoolStats is a snapshot of a pool's counters, from
// [ProducerPool.Stats]: totals over the pool's life, and each node's
// figures. Counts are of messages.
type ProducerPoolStats struct {
	Published      uint64 // messages a node answered OK to
	PublishedBytes uint64 // their body bytes

	Pending      int64 // publishes accepted and not yet completed and delivered (results waiting for an unread doneChan are not counted: they hold back only that channel's publishers)
	PendingBytes int64 // their body bytes
	Queued       int   // publishes waiting for a node

	Refused        uint64            // publishes refused at the call (invalid input, ErrPendingFull)
	NsqdErrors     map[string]uint64 // publishes failed with nsqd's ErrProtocol, by code
	NeverSent      uint64            // publishes failed with ErrNeverSent: no node could take them
	UnknownOutcome uint64            // publishes failed with ErrUnknownOutcome
	Rerouted       uint64            // times a publish went to another node after one could not take it

	Nodes []PoolNodeStats // the nodes in the pool now, by address
}

// PoolNodeStats are one node's figures in [ProducerPoolStats].
type PoolNodeStats struct {
	Addr           string // nsqd TCP address
	State          string // "connecting", "up", "down" or "removed"
	Pending        int    // messages handed to the node and not yet answered
	Published      uint64 // messages it stored
	UnknownOutcome uint64 // messages whose outcome on it is unknown
	NeverSent      uint64 // messages it could not take (moved to another node, or failed)
	Rerouted       uint64 // of those, moved to another node
	LastError      error  // the last error it gave, or nil

	Producer ProducerStats // the node's Producer's own counters
}

// Stats returns a snapshot of the pool's counters. It is safe to call at
// any time, also after Stop (the nodes are gone then; the totals stay).
func (p *ProducerPool) Stats() ProducerPoolStats {
	s := &p.stats
	count, bytes := p.limit.pending()
	out := ProducerPoolStats{
		Pending:        count,
		PendingBytes:   bytes,
		Refused:        s.refused.Load(),
		NeverSent:      s.neverSent.Load(),
		UnknownOutcome: s.unknown.Load(),
		Rerouted:       s.rerouted.Load(),
		NsqdErrors:     map[string]uint64{},
	}
	s.mu.Lock()
	for k, v := range s.nsqdErrors {
		out.NsqdErrors[k] = v
	}
	s.mu.Unlock()
	p.mu.Lock()
	out.Published, out.PublishedBytes = s.published, s.publishedBytes
	out.Queued = p.queuedLocked()
	nodes := make([]*poolNode, len(p.nodes))
	copy(nodes, p.nodes)
	for _, n := range p.nodes {
		out.Nodes = append(out.Nodes, PoolNodeStats{
			Addr: n.addr, State: n.state.String(), Pending: n.held,
			Published: n.published, UnknownOutcome: n.unknown, NeverSent: n.neverSent, Rerouted: n.rerouted,
			LastError: n.lastErr,
		})
	}
	p.mu.Unlock()
	for i, n := range nodes {
		out.Nodes[i].Producer = n.producer.Stats()
	}
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].Addr < out.Nodes[j].Addr })
	return out
}
