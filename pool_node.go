package nsq

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// txHook takes the results of a Producer's async publishes in place of
// their doneChans (a ProducerPool sets one on each node's Producer). The
// router calls done for each result, in order, and flush once per pass of
// its loop, after that pass's results. Neither may block the router.
type txHook interface {
	done(tx *ProducerTransaction)
	flush()
}

// nodeHook is a node Producer's txHook. It settles the results of a
// router's pass under one lock and hands them to their callers from the
// router's goroutine, without a hop through the node's goroutine. It never
// waits for the pool's mu (a sender holding the node's sendMu may be
// waiting for this very router while dispatch holds mu and waits for that
// sendMu): when mu is busy, or results already went that way and are not
// settled yet, the pass goes to the node's goroutine through n.results, as
// every result did before, so results still settle in the router's order.
type nodeHook struct {
	p   *ProducerPool
	n   *poolNode
	txs []*ProducerTransaction // the pass's results; router goroutine only
	out []*poolTx              // reused by flush; router goroutine only
}

func (h *nodeHook) done(tx *ProducerTransaction) { h.txs = append(h.txs, tx) }

func (h *nodeHook) flush() {
	if len(h.txs) == 0 {
		return
	}
	p, n := h.p, h.n
	if n.detoured.Load() > 0 || !p.mu.TryLock() {
		// n.results has room for every publish the node holds.
		n.detoured.Add(int64(len(h.txs)))
		for _, tx := range h.txs {
			n.results <- tx
		}
	} else {
		out := h.out[:0]
		for _, tx := range h.txs {
			t := tx.Args[0].(*poolTx)
			t.result = tx
			out = p.settleLocked(n, t, tx.Error, out)
		}
		pull := !p.closing && p.queuedLocked() > 0
		p.mu.Unlock()
		p.deliver(out)
		clear(out)
		h.out = out[:0]
		if pull {
			// Room was freed: the node's goroutine hands on what waits.
			select {
			case n.pull <- struct{}{}:
			default:
			}
		}
	}
	clear(h.txs)
	h.txs = h.txs[:0]
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
	producer *Producer
	static   bool                      // given to NewProducerPool: nsqlookupd never removes it
	results  chan *ProducerTransaction // results its hook could not settle on the router's goroutine, in order
	kick     chan struct{}             // capacity 1: the node's state changed
	pull     chan struct{}             // capacity 1: room was freed while publishes wait: dispatch them
	detoured atomic.Int64              // results its hook sent through results and not yet settled
	exited   chan struct{}             // closed when the node's goroutine has exited

	// sendMu is held while publishes are handed to the Producer. dispatch
	// locks it before releasing the pool's mu, so a node receives its
	// publishes in the order the pool took them from its queue.
	sendMu sync.Mutex

	// Guarded by ProducerPool.mu.
	state                                   nodeState
	held                                    int   // messages handed to the Producer and not settled
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
		producer: pr,
		static:   static,
		results:  make(chan *ProducerTransaction, p.window+1),
		kick:     make(chan struct{}, 1),
		pull:     make(chan struct{}, 1),
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
	p.wg.Add(1)
	go p.runNode(n)
	return n
}

// hasRoom reports whether n may take t now. A node holding nothing takes
// any publish, however large.
func (n *poolNode) hasRoom(p *ProducerPool, t *poolTx) bool {
	return n.held == 0 || (n.held+t.msgs <= p.window && n.heldSize+t.size <= p.windowSize)
}

// publish hands t to the node's Producer; its result goes to the node's
// hook (no doneChan: the router hands it to the hook instead). sendMu is
// held.
func (n *poolNode) publish(t *poolTx) error {
	t.nodeArgs[0] = t
	args := t.nodeArgs[:] // no allocation per call
	switch t.kind {
	case poolMPUB:
		return n.producer.MultiPublishAsync(t.topic, t.bodies, nil, args...)
	case poolDPUB:
		return n.producer.DeferredPublishAsync(t.topic, t.delay, t.body, nil, args...)
	}
	return n.producer.PublishAsync(t.topic, t.body, nil, args...)
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
		n.requeueKeyedLocked(p)
	}
	n.state = s
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// requeueKeyedLocked sends the keyed publishes waiting for a node that
// takes nothing more back to the pool's queue, in order, for the keys'
// next node.
func (n *poolNode) requeueKeyedLocked(p *ProducerPool) {
	if n.keyQ.len() == 0 {
		return
	}
	var q poolQueue
	for n.keyQ.len() > 0 {
		q.pushBack(n.keyQ.popFront())
	}
	for p.retryQ.len() > 0 {
		q.pushBack(p.retryQ.popFront())
	}
	p.retryQ = q
}

// removeLocked takes the node out of the pool: it takes nothing more, its
// Producer is stopped (answering what it holds) and the node's goroutine
// exits.
func (n *poolNode) removeLocked(p *ProducerPool) {
	if n.state == nodeRemoved {
		return
	}
	n.requeueKeyedLocked(p)
	n.state = nodeRemoved
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// runNode is a node's goroutine: it settles the Producer's results,
// connects the node (Ping) while it is not up, and stops the Producer once
// the node is removed.
func (p *ProducerPool) runNode(n *poolNode) {
	defer p.wg.Done()
	defer close(n.exited)
	probeDone := make(chan error, 1)
	probing := false
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
			go func() { probeDone <- n.producer.Ping() }()
		}
		select {
		case tx := <-n.results:
			p.onResults(n, tx)
		case err := <-probeDone:
			probing = false
			p.onProbe(n, err)
		case <-n.pull:
			p.dispatch()
		case <-n.kick:
		}
	}
	stopped := make(chan struct{})
	go func() {
		n.producer.Stop()
		close(stopped)
	}()
	for stopped != nil || probing {
		select {
		case tx := <-n.results:
			p.onResults(n, tx)
		case <-probeDone:
			probing = false
		case <-n.pull:
			p.dispatch() // its hook's results may have freed publishes for other nodes
		case <-stopped:
			stopped = nil
		}
	}
	// The stopped Producer has delivered every result.
	for len(n.results) > 0 {
		p.onResults(n, <-n.results)
	}
	// A publish dispatched to the node as it was removed may still be on
	// its way to the stopped Producer, which refuses it: the sender moves it.
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

// onResults settles a result of the node's Producer, and the others
// already waiting, under one lock.
func (p *ProducerPool) onResults(n *poolNode, tx *ProducerTransaction) {
	var batch [64]*ProducerTransaction
	txs := append(batch[:0], tx)
	for len(txs) < len(batch) {
		select {
		case tx := <-n.results:
			txs = append(txs, tx)
			continue
		default:
		}
		break
	}
	var obuf [64]*poolTx
	out := obuf[:0]
	p.mu.Lock()
	for _, tx := range txs {
		t := tx.Args[0].(*poolTx)
		t.result = tx
		out = p.settleLocked(n, t, tx.Error, out)
	}
	work := p.dispatchLocked()
	p.mu.Unlock()
	p.deliver(out)
	// After delivery: the hook's next results come after these.
	if left := n.detoured.Add(-int64(len(txs))); left < 0 && invariantPanics {
		panic(fmt.Sprintf("nsq: pool node %s settled %d results more than its hook sent its way", n.addr, -left))
	}
	p.send(work)
}

// dispatch hands what waits to the nodes that have room.
func (p *ProducerPool) dispatch() {
	p.mu.Lock()
	work := p.dispatchLocked()
	p.mu.Unlock()
	p.send(work)
}

// onProbe records whether the node connected.
func (p *ProducerPool) onProbe(n *poolNode, err error) {
	var out []*poolTx
	var work []nodeWork
	p.mu.Lock()
	switch {
	case n.state == nodeRemoved:
	case err == nil:
		n.setStateLocked(p, nodeUp)
		work = p.dispatchLocked()
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
	p.send(work)
}

// ProducerPoolStats is a snapshot of a pool's counters, from
// [ProducerPool.Stats]: totals over the pool's life, and each node's
// figures. Counts are of messages.
type ProducerPoolStats struct {
	Published      uint64 // messages a node answered OK to
	PublishedBytes uint64 // their body bytes

	Pending      int64 // publishes accepted and not yet completed and delivered
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
