package nsq

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"go.uber.org/goleak"
)

// The ProducerPool's seeded simulation: TestSimulation's hostile fake nsqd
// (its actions, its record of what it read and answered), several of them,
// each with its own behaviour (how hostile, and a while during which it
// refuses every connection), under a static-address pool; callers mix
// every publishing method of the pool (sync, async, *Context with short
// contexts, TryPublishAsync, by key), Flush, then Stop, in a
// testing/synctest bubble (read_timeout, backoff, stop_timeout cost no wall
// time; a pool goroutine blocked for good is a deadlock the bubble
// reports). After every run the pool's guarantees (README "ProducerPool",
// doc.go) are checked against what the fakes received and answered: see
// poolSim.check.
//
//	go test -run TestPoolSimulation .                             # the CI budget: seeds 1 to poolSimCIRuns
//	go test -run TestPoolSimulation -poolsim.seed=42 -v .         # one seed, with its trace
//	go test -run TestPoolSimulation -poolsim.survey=3000 .        # seeds 1 to 3000, violations listed by kind
//	go test -run TestPoolSimulation -poolsim.duration=10m -v .    # fresh seeds for 10 minutes
//	go test -run XXX -fuzz FuzzPoolSimulation .                   # the fuzzer drives the fakes

var (
	poolSimDuration = flag.Duration("poolsim.duration", 0, "run TestPoolSimulation on fresh seeds for this long instead of the CI budget")
	poolSimSeedFlag = flag.Uint64("poolsim.seed", 0, "run TestPoolSimulation on this seed only, and log its trace")
	poolSimSurvey   = flag.Int("poolsim.survey", 0, "run TestPoolSimulation on seeds 1 to this, without stopping at the first failure, and list the seeds that break each invariant")
	poolSimTraces   = flag.String("poolsim.traces", "", "with -poolsim.survey or -poolsim.duration, write the trace of each run that breaks an invariant to a file in this directory")
)

// poolSimCIRuns is the CI budget: seeds 1 to poolSimCIRuns, in this
// process (a sequential test: its bubbles share the package's pools of
// sync transactions, see resetSyncTxPool).
const poolSimCIRuns = 100

func TestPoolSimulation(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	runSeeds(t, "pool simulation", seedRuns{seed: *poolSimSeedFlag, survey: *poolSimSurvey, duration: *poolSimDuration, ci: poolSimCIRuns}, runPoolSimSeed)
}

func FuzzPoolSimulation(f *testing.F) {
	f.Add(uint64(1), []byte{})
	f.Add(uint64(2), []byte{99, 5, 99, 3, 0, 99, 1})
	f.Add(uint64(3), bytes.Repeat([]byte{97, 2}, 32))
	f.Add(uint64(4), []byte{0, 0, 99, 4, 0, 0, 0, 99, 8, 0, 99, 7})
	f.Fuzz(func(t *testing.T, seed uint64, script []byte) {
		plan := newPoolSimPlan(rand.New(rand.NewPCG(seed, 0)))
		for i := range plan.nodes {
			plan.nodes[i].hostility = 100 // the bytes decide: see byteChooser
		}
		plan.calm = false // the fakes are not
		bc := &byteChooser{b: script}
		runPoolSim(t, seed, plan, func(int) chooser { return bc }, false)
	})
}

func runPoolSimSeed(t *testing.T, seed uint64, verbose bool) {
	if testing.Verbose() && *poolSimDuration == 0 && *poolSimSurvey == 0 {
		fmt.Printf("pool simulation: seed %d\n", seed)
	}
	plan := newPoolSimPlan(rand.New(rand.NewPCG(seed, 0)))
	runPoolSim(t, seed, plan, func(conn int) chooser {
		return rand.New(rand.NewPCG(seed, uint64(conn)+1))
	}, verbose)
}

// poolOpKind is what a pool caller does in one step.
type poolOpKind int

const (
	popPublish poolOpKind = iota
	popPublishCtx
	popMPub
	popMPubCtx
	popDPub
	popDPubCtx
	popAsync
	popAsyncNil
	popAsyncCtx
	popMPubAsync
	popMPubAsyncCtx
	popDPubAsync
	popDPubAsyncCtx
	popTry
	popByKey
	popAsyncByKey
	popFlush
	popSleep
	numPoolOpKinds
)

var poolOpNames = [...]string{"Publish", "PublishContext", "MultiPublish", "MultiPublishContext", "DeferredPublish",
	"DeferredPublishContext", "PublishAsync", "PublishAsync(nil)", "PublishAsyncContext", "MultiPublishAsync",
	"MultiPublishAsyncContext", "DeferredPublishAsync", "DeferredPublishAsyncContext", "TryPublishAsync",
	"PublishByKey", "PublishAsyncByKey", "Flush", "sleep"}

func (k poolOpKind) String() string { return poolOpNames[k] }

func (k poolOpKind) async() bool {
	return (k >= popAsync && k <= popTry) || k == popAsyncByKey
}

// syncCtx: a sync call bounded by a context.
func (k poolOpKind) syncCtx() bool { return k == popPublishCtx || k == popMPubCtx || k == popDPubCtx }

func (k poolOpKind) asyncCtx() bool {
	return k == popAsyncCtx || k == popMPubAsyncCtx || k == popDPubAsyncCtx
}

func (k poolOpKind) mpub() bool {
	return k == popMPub || k == popMPubCtx || k == popMPubAsync || k == popMPubAsyncCtx
}

func (k poolOpKind) dpub() bool {
	return k == popDPub || k == popDPubCtx || k == popDPubAsync || k == popDPubAsyncCtx
}

// simKind is the TestSimulation kind whose wire form the call has (for
// answeredWith and resendAfter).
func (k poolOpKind) simKind() simOpKind {
	switch {
	case k.mpub():
		return opMPub
	case k.dpub():
		return opDPub
	}
	return opPublish
}

type poolSimPlan struct {
	cfg         []any
	tls         bool
	nodes       []poolNodePlan
	stopAfter   time.Duration
	stopTimeout time.Duration
	doubleStop  bool
	backoff     time.Duration
	maxBackoff  time.Duration
	callers     []poolCallerPlan
	// calm: every fake behaves on its connections (it only refuses new
	// ones, as its plan says), node 0 never refuses, and a publish may try
	// every node: no publish may end never sent before Stop. Heartbeats
	// are off: the fake sends none unless hostile, and with them on an
	// idle connection ends after read_timeout.
	calm       bool
	maxPending int
}

// poolNodePlan is one fake nsqd's behaviour.
type poolNodePlan struct {
	hostility int // percent of its steps that are hostile
	// It refuses every connection (resets it before reading anything)
	// from refuseFrom to refuseUntil; refuseUntil < 0: to the end.
	refuseFrom, refuseUntil time.Duration
}

func (np poolNodePlan) refusing(at time.Duration) bool {
	return at >= np.refuseFrom && (np.refuseUntil < 0 || at < np.refuseUntil)
}

type poolCallerPlan struct {
	doneCap   int
	readPause time.Duration
	ops       []poolOpPlan
}

type poolOpPlan struct {
	kind    poolOpKind
	topic   string
	key     string
	sizes   []int
	delay   time.Duration
	timeout time.Duration
	sleep   time.Duration
}

func newPoolSimPlan(r *rand.Rand) *poolSimPlan {
	p := &poolSimPlan{
		tls:         r.IntN(10) == 0,
		stopAfter:   time.Duration(r.IntN(1000)) * time.Millisecond,
		doubleStop:  r.IntN(4) == 0,
		stopTimeout: pick(r, 50*time.Millisecond, 300*time.Millisecond, 2*time.Second),
		backoff:     pick(r, 10*time.Millisecond, 50*time.Millisecond),
	}
	p.maxBackoff = p.backoff * time.Duration(pick(r, 1, 4, 20))
	readTimeout := pick(r, 200*time.Millisecond, time.Second, 5*time.Second)
	p.maxPending = pick(r, 2, 8, 65536)
	p.cfg = []any{
		"stop_timeout", p.stopTimeout,
		"reconnect_backoff", p.backoff,
		"max_reconnect_backoff", p.maxBackoff,
		"dial_timeout", pick(r, 100*time.Millisecond, time.Second),
		"read_timeout", readTimeout,
		"heartbeat_interval", readTimeout / 2,
		"write_timeout", pick(r, 100*time.Millisecond, time.Second),
		"max_pending", p.maxPending,
		"auto_batch", r.IntN(4) != 0,
		"max_batch_messages", pick(r, 2, 512),
		"pool_max_attempts", pick(r, 1, 2, 3, 5),
	}
	switch r.IntN(6) {
	case 0:
		p.cfg = append(p.cfg, "snappy", true)
	case 1:
		p.cfg = append(p.cfg, "deflate", true, "deflate_level", 1+r.IntN(9))
	}
	if p.tls {
		p.cfg = append(p.cfg, "tls_v1", true)
	}
	for range 2 + r.IntN(3) {
		np := poolNodePlan{hostility: pick(r, 0, 5, 15, 30, 60, 90), refuseFrom: -1, refuseUntil: -1}
		switch r.IntN(6) {
		case 0: // down from the start, for good
			np.refuseFrom = 0
		case 1: // down from the start, back later
			np.refuseFrom, np.refuseUntil = 0, time.Duration(1+r.IntN(1500))*time.Millisecond
		case 2: // goes down, comes back
			np.refuseFrom = time.Duration(r.IntN(800)) * time.Millisecond
			np.refuseUntil = np.refuseFrom + time.Duration(1+r.IntN(1500))*time.Millisecond
		case 3: // goes down for good
			np.refuseFrom = time.Duration(r.IntN(800)) * time.Millisecond
		default:
			np.refuseFrom, np.refuseUntil = 1, 0 // never
		}
		p.nodes = append(p.nodes, np)
	}
	if r.IntN(5) == 0 {
		p.calm = true
		for i := range p.nodes {
			p.nodes[i].hostility = 0
		}
		p.nodes[0].refuseFrom, p.nodes[0].refuseUntil = 1, 0
		if p.tls { // a fake may decline TLS: the connection fails
			p.tls = false
			p.cfg = p.cfg[:len(p.cfg)-2]
		}
		p.cfg = append(p.cfg, "pool_max_attempts", len(p.nodes), "heartbeat_interval", -1)
	}
	for range 1 + r.IntN(5) {
		c := poolCallerPlan{doneCap: pick(r, 0, 1, 1000), readPause: pick(r, 0, 0, time.Millisecond, 50*time.Millisecond, 500*time.Millisecond)}
		for range 1 + r.IntN(20) {
			op := poolOpPlan{kind: poolOpKind(r.IntN(int(numPoolOpKinds))), topic: pick(r, "sim0", "sim1"), key: pick(r, "k0", "k1", "k2")}
			n := 1
			if op.kind.mpub() {
				n = 1 + r.IntN(3)
			}
			for range n {
				size := r.IntN(40)
				switch r.IntN(100) {
				case 0:
					size = 300 << 10 // more than the in-memory connection holds unread
				case 1, 2, 3, 4, 5:
					size = 1<<10 + r.IntN(20<<10)
				}
				op.sizes = append(op.sizes, size)
			}
			op.delay = time.Duration(r.IntN(3)) * time.Second
			op.timeout = pick(r, time.Millisecond, 20*time.Millisecond, 300*time.Millisecond)
			op.sleep = pick(r, 0, 0, time.Millisecond, 30*time.Millisecond, 200*time.Millisecond)
			c.ops = append(c.ops, op)
			if r.IntN(8) == 0 {
				// A burst: async publishes back to back, enough to fill
				// the nodes' windows and the pending limit.
				kind := pick(r, popAsync, popAsyncByKey, popTry, popMPubAsync)
				for range 5 + r.IntN(60) {
					c.ops = append(c.ops, poolOpPlan{kind: kind, topic: op.topic, key: pick(r, "k0", "k1", "k2"), sizes: []int{r.IntN(40)},
						timeout: op.timeout})
				}
			}
		}
		p.callers = append(p.callers, c)
	}
	return p
}

// poolSimReasons are the error frames a fake answers to a failing publish:
// nsqd's failure code of that command (E_PUB_FAILED for PUB, E_DPUB_FAILED
// for DPUB, E_MPUB_FAILED for MPUB), or a refusal of its input.
func poolSimReasons(rec *simCmd) []string {
	switch rec.name {
	case "PUB":
		return []string{"E_PUB_FAILED PUB failed", "E_PUB_FAILED PUB failed", "E_BAD_MESSAGE PUB bad message",
			"E_BAD_TOPIC PUB topic name is not valid", "E_INVALID invalid command", "E_BAD_MESSAGE PUB message too big 70 > 64"}
	case "DPUB":
		return []string{"E_DPUB_FAILED DPUB failed", "E_DPUB_FAILED DPUB failed", "E_INVALID DPUB timeout 2000 out of range 0-1000",
			"E_BAD_MESSAGE DPUB message too big 70 > 64"}
	}
	return []string{"E_MPUB_FAILED MPUB failed", "E_MPUB_FAILED MPUB failed", "E_BAD_BODY MPUB invalid body size",
		"E_BAD_MESSAGE MPUB message too big 70 > 64", "E_BAD_BODY MPUB body too big 300 > 200", "E_BAD_TOPIC MPUB topic name is not valid"}
}

// movableReason reports whether nsqd's refusal says a single message was
// not stored (the pool moves it to another node).
func movableReason(answer string) bool {
	return strings.HasPrefix(answer, "E_PUB_FAILED") || strings.HasPrefix(answer, "E_DPUB_FAILED")
}

// carriesAlone reports whether cmd carried call's bodies and nothing else,
// in the command of call's own kind: its answer is call's outcome.
func carriesAlone(cmd *simCmd, call *simCall) bool {
	if !slices.Equal(cmd.msgs, call.texts) {
		return false
	}
	switch call.kind {
	case opMPub, opMPubCtx, opMPubAsync:
		return cmd.name == "MPUB"
	case opDPub, opDPubCtx, opDPubAsync:
		return cmd.name == "DPUB"
	}
	return cmd.name == "PUB"
}

// resendAfter says why a body received in prev must never be received
// again (by any fake), or "": prev was left unanswered (written, outcome
// unknown), answered OK (stored) or E_MPUB_FAILED (maybe partly stored),
// or refused a publish alone for good (its outcome is the refusal). A
// command refused that carried others too (an automatic batch, which
// nsqd stored none of) is sent again one by one, and E_PUB_FAILED or
// E_DPUB_FAILED of a single message moves it to another node.
func resendAfter(prev *simCmd, call *simCall) string {
	switch {
	case prev.answer == "":
		return "left it unanswered (its outcome is unknown)"
	case prev.answer == "OK":
		return "answered OK to it"
	case strings.HasPrefix(prev.answer, "E_MPUB_FAILED"):
		return "answered " + prev.answer + " (it may be stored)"
	case carriesAlone(prev, call) && !movableReason(prev.answer):
		return "refused it alone: " + prev.answer
	}
	return ""
}

// poolSim is one run of the pool simulation. Its fakes are sim's
// (simRun.serve): sim holds what they received and answered, the trace and
// the violations.
type poolSim struct {
	sim   *simRun
	plan  *poolSimPlan
	srvs  []*fakensqd.Server
	addrs []string

	stopReturned atomic.Bool
	sawStopped   atomic.Bool
	stopSeq      int // sim.seq when Stop was called; guarded by sim.mu
	dropped      atomic.Int64
	stats        ProducerPoolStats // once Stop returned

	// Guarded by sim.mu.
	calls   []*poolCall
	byCall  map[*simCall]*poolCall
	changes []int    // sim.seq of each node state change the pool logged
	flushes [][2]int // sim.seq when each Flush that returned nil began and returned
}

// poolCall is one publish call of the pool simulation.
type poolCall struct {
	sc       *simCall // texts, bufs, outcome (kind: the wire form, see simKind)
	kind     poolOpKind
	key      string
	startSeq int // sim.seq when the call began
	retSeq   int // when it returned
	endSeq   int // when its outcome came (sync: returned; async: its result arrived)
	arrival  int // async: the position of its result among its caller's results
	// allDown: when the call began, every fake refused connections, none
	// had one open, and all went on refusing for longer than the pool may
	// take to say so (dial_timeout + max_reconnect_backoff).
	allDown    bool
	start, end time.Duration
}

func (c *poolCall) what() string {
	return fmt.Sprintf("caller %d op %d (%s %s)", c.sc.caller, c.sc.op, c.kind, strings.Join(shortBodies(c.sc.texts), ","))
}

func runPoolSim(t *testing.T, seed uint64, plan *poolSimPlan, newChooser func(conn int) chooser, verbose bool) {
	t.Helper()
	resetSyncTxPool()
	defer resetSyncTxPool()
	defer func() {
		// A pool goroutine blocked for good makes synctest.Test panic
		// once the run has returned; the run has reported it already.
		if r := recover(); r != nil {
			if simCollect != nil {
				simCollect(seed, []string{fmt.Sprint(r)})
				return
			}
			t.Errorf("pool simulation seed %d: %v", seed, r)
		}
	}()
	synctest.Test(t, func(t *testing.T) {
		sim := &simRun{t: t, seed: seed, plan: &simPlan{}, newChooser: newChooser, verbose: verbose,
			bodies: make(map[string]*simBody), runEnd: make(chan struct{}),
			strictResend: true, reasons: poolSimReasons}
		ps := &poolSim{sim: sim, plan: plan, byCall: map[*simCall]*poolCall{}}
		ps.run()
	})
}

func (ps *poolSim) run() {
	r := ps.sim
	before := goleak.IgnoreCurrent()
	r.start = time.Now()
	for i := range ps.plan.nodes {
		s := fakensqd.NewMem(r.t)
		ps.srvs = append(ps.srvs, s)
		ps.addrs = append(ps.addrs, s.Addr())
		r.srvWG.Add(1)
		go ps.acceptNode(i, s)
	}
	cfg := testConfig(r.t, ps.plan.cfg...)
	if ps.plan.tls {
		cfg.TlsConfig = &tls.Config{InsecureSkipVerify: true}
	}
	p, err := NewProducerPool(ps.addrs, cfg)
	if err != nil {
		r.t.Fatalf("pool simulation seed %d: NewProducerPool: %v", r.seed, err)
	}
	p.SetLogger(&poolSimLogger{ps: ps}, LogLevelInfo)

	var callers, readers sync.WaitGroup
	var doneChans []chan *ProducerTransaction
	for i, cp := range ps.plan.callers {
		done := make(chan *ProducerTransaction, cp.doneCap)
		doneChans = append(doneChans, done)
		readers.Add(1)
		go ps.reader(i, cp.readPause, done, &readers)
		callers.Add(1)
		go ps.caller(p, i, cp, done, &callers)
	}

	time.Sleep(ps.plan.stopAfter)
	if !ps.stop(p) {
		ps.report()
		return
	}
	callersDone := make(chan struct{})
	go func() { callers.Wait(); close(callersDone) }()
	select {
	case <-callersDone:
	case <-time.After(time.Minute):
		r.violate("a call did not return within a minute after Stop returned")
		ps.report()
		return
	}
	ps.afterStop(p, before)
	for _, done := range doneChans {
		close(done)
	}
	readers.Wait()
	close(r.runEnd)
	for _, s := range ps.srvs {
		s.Close()
	}
	r.srvWG.Wait()
	ps.check()
	ps.report()
}

// acceptNode plays one nsqd: it refuses connections while its plan says
// so (reset before reading anything), else serves them as TestSimulation's
// fake does, with the node's hostility.
func (ps *poolSim) acceptNode(node int, s *fakensqd.Server) {
	r := ps.sim
	defer r.srvWG.Done()
	np := ps.plan.nodes[node]
	for {
		c, err := s.AcceptTimeout(24 * time.Hour)
		if err != nil {
			return
		}
		r.mu.Lock()
		sc := &simConn{id: len(r.conns), node: node, acceptAt: time.Now(), hostility: np.hostility}
		r.conns = append(r.conns, sc)
		refuse := np.refusing(r.now())
		if refuse {
			sc.ended, sc.endAt, sc.endedBy = true, time.Now(), "refused"
			r.traceLocked("conn#%d to node %d refused", sc.id, node)
		} else {
			r.traceLocked("conn#%d accepted by node %d", sc.id, node)
		}
		r.mu.Unlock()
		if refuse {
			c.Reset()
			continue
		}
		r.srvWG.Add(1)
		go r.serve(sc, c)
	}
}

// stop calls Stop (from two goroutines at once, as the plan says), which
// must return within twice stop_timeout (what is queued or held, then the
// nodes' Producers, each up to stop_timeout; results for doneChans until
// twice stop_timeout in all) plus a small slack.
func (ps *poolSim) stop(p *ProducerPool) bool {
	r := ps.sim
	r.mu.Lock()
	r.seq++
	ps.stopSeq = r.seq
	r.traceLocked("Stop")
	r.mu.Unlock()
	stopped := make(chan struct{})
	start := time.Now()
	if ps.plan.doubleStop {
		var both sync.WaitGroup
		both.Add(2)
		for range 2 {
			go func() { defer both.Done(); p.Stop() }()
		}
		go func() { both.Wait(); close(stopped) }()
	} else {
		go func() { p.Stop(); close(stopped) }()
	}
	const slack = 10 * time.Millisecond
	bound := 2*ps.plan.stopTimeout + slack
	select {
	case <-stopped:
		ps.stopReturned.Store(true)
		r.tracef("Stop returned after %s", time.Since(start))
		return true
	case <-time.After(bound):
	}
	r.violate("Stop did not return within twice stop_timeout (%s) + %s", ps.plan.stopTimeout, slack)
	r.tracef("goroutines of the pool:\n%s", producerStacks())
	select {
	case <-stopped:
		ps.stopReturned.Store(true)
		r.violate("Stop returned after %s", time.Since(start))
		return true
	case <-time.After(time.Hour):
		r.violate("Stop did not return within an hour")
		return false
	}
}

// afterStop checks, once Stop has returned and no call is in progress,
// that nothing is pending or queued and no goroutine of the pool is left.
func (ps *poolSim) afterStop(p *ProducerPool, before goleak.Option) {
	r := ps.sim
	st := p.Stats()
	if st.Pending != 0 || st.PendingBytes != 0 || st.Queued != 0 {
		r.violate("after Stop, Stats says %d publishes (%d bytes) pending, %d queued", st.Pending, st.PendingBytes, st.Queued)
	}
	ps.stats = st
	synctest.Wait()
	if err := goleak.Find(before,
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq.(*poolSim).acceptNode"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq.(*simRun).serve"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq.(*simRun).serve.func1"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq.(*poolSim).reader"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq/internal/fakensqd.(*Server).acceptLoop"),
	); err != nil {
		r.violate("goroutines survived Stop: %v", err)
	}
}

func (ps *poolSim) report() {
	r := ps.sim
	r.mu.Lock()
	defer r.mu.Unlock()
	if simCollect != nil {
		simCollect(r.seed, r.violations)
		if *poolSimTraces != "" && len(r.violations) > 0 {
			text := strings.Join(r.violations, "\n") + "\n\ntrace:\n" + strings.Join(r.trace, "\n") + "\n"
			os.WriteFile(filepath.Join(*poolSimTraces, fmt.Sprintf("poolsim-%d.log", r.seed)), []byte(text), 0o644)
		}
		return
	}
	if len(r.violations) == 0 {
		if r.verbose {
			r.t.Logf("seed %d: no violation; trace:\n%s", r.seed, strings.Join(r.trace, "\n"))
		}
		return
	}
	r.t.Errorf("pool simulation seed %d: %d violations (rerun: go test -run TestPoolSimulation -poolsim.seed=%d -v .):\n  %s\ntrace:\n%s",
		r.seed, len(r.violations), r.seed, strings.Join(r.violations, "\n  "), strings.Join(r.trace, "\n"))
}

// poolSimLogger traces the pool's log, counts the results it drops after
// stop_timeout, and notes when a node's state changes.
type poolSimLogger struct{ ps *poolSim }

func (l *poolSimLogger) Output(_ int, s string) error {
	ps := l.ps
	r := ps.sim
	if m := droppedRE.FindStringSubmatch(s); m != nil {
		var n int64
		fmt.Sscan(m[1], &n)
		ps.dropped.Add(n)
	} else if strings.Contains(s, "result dropped") {
		ps.dropped.Add(1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if strings.Contains(s, "(pool) nsqd ") && (strings.Contains(s, " is up") || strings.Contains(s, " is down") ||
		strings.Contains(s, " takes nothing until")) {
		r.seq++
		ps.changes = append(ps.changes, r.seq)
	}
	r.traceLocked("log: %s", s)
	return nil
}

// reader takes a caller's async results, counting them.
func (ps *poolSim) reader(caller int, pause time.Duration, done chan *ProducerTransaction, wg *sync.WaitGroup) {
	r := ps.sim
	defer wg.Done()
	arrival := 0
	for tx := range done {
		pc := tx.Args[0].(*poolCall)
		call := pc.sc
		r.mu.Lock()
		call.results++
		if call.results > 1 {
			r.violations = append(r.violations, fmt.Sprintf("%s: result delivered %d times", pc.what(), call.results))
		}
		arrival++
		r.seq++
		pc.arrival, pc.endSeq = arrival, r.seq
		call.result, call.hasResult = tx.Error, true
		r.traceLocked("caller %d op %d (%s) result: %v", caller, call.op, pc.kind, tx.Error)
		r.mu.Unlock()
		if !pc.kind.mpub() { // MultiPublishAsync's bodies were copied, and reused at once
			poison(call.bufs)
		}
		time.Sleep(pause)
	}
}

// caller runs one caller's operations, in order.
func (ps *poolSim) caller(p *ProducerPool, i int, cp poolCallerPlan, done chan *ProducerTransaction, wg *sync.WaitGroup) {
	r := ps.sim
	defer wg.Done()
	for j, op := range cp.ops {
		if op.kind == popSleep {
			time.Sleep(op.sleep)
			continue
		}
		if op.kind == popFlush {
			ctx, cancel := context.WithTimeout(context.Background(), op.timeout)
			stopReturned := ps.stopReturned.Load()
			r.mu.Lock()
			r.seq++
			began := r.seq
			r.mu.Unlock()
			err := p.Flush(ctx)
			if err == nil {
				r.mu.Lock()
				r.seq++
				ps.flushes = append(ps.flushes, [2]int{began, r.seq})
				r.mu.Unlock()
			}
			if err != nil && err != ErrStopped && !errors.Is(err, ctx.Err()) {
				r.violate("caller %d op %d: Flush returned %v: want nil, ctx's error or ErrStopped", i, j, err)
			}
			if stopReturned && err != ErrStopped {
				r.violate("caller %d op %d: Flush after Stop returned %v, want ErrStopped", i, j, err)
			}
			r.tracef("caller %d op %d Flush: %v", i, j, err)
			cancel()
			continue
		}
		call := &simCall{caller: i, op: j, kind: op.kind.simKind(), topic: op.topic, delay: op.delay,
			stopBefore: ps.sawStopped.Load(), stopReturned: ps.stopReturned.Load()}
		pc := &poolCall{sc: call, kind: op.kind, key: op.key}
		for m, pad := range op.sizes {
			text := fmt.Sprintf("s%d.c%d.o%d.m%d.", r.seed, i, j, m) + strings.Repeat("x", pad)
			call.texts = append(call.texts, text)
			call.bufs = append(call.bufs, []byte(text))
		}
		r.mu.Lock()
		for _, text := range call.texts {
			r.bodies[text] = &simBody{call: call}
		}
		ps.calls = append(ps.calls, pc)
		ps.byCall[call] = pc
		r.seq++
		pc.startSeq = r.seq
		pc.start = r.now()
		pc.allDown = ps.allDownLocked(pc.start)
		r.mu.Unlock()
		ps.do(p, pc, op, done)
		time.Sleep(op.sleep)
	}
}

// do makes one call and records what it returned.
func (ps *poolSim) do(p *ProducerPool, pc *poolCall, op poolOpPlan, done chan *ProducerTransaction) {
	r := ps.sim
	call := pc.sc
	var err error
	ctx := context.Background()
	if op.kind.syncCtx() || op.kind.asyncCtx() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, op.timeout)
		defer cancel()
	}
	body := call.bufs[0]
	switch op.kind {
	case popPublish:
		err = p.Publish(op.topic, body)
	case popPublishCtx:
		err = p.PublishContext(ctx, op.topic, body)
	case popMPub:
		err = p.MultiPublish(op.topic, call.bufs)
	case popMPubCtx:
		err = p.MultiPublishContext(ctx, op.topic, call.bufs)
	case popDPub:
		err = p.DeferredPublish(op.topic, op.delay, body)
	case popDPubCtx:
		err = p.DeferredPublishContext(ctx, op.topic, op.delay, body)
	case popAsync:
		err = p.PublishAsync(op.topic, body, done, pc)
	case popAsyncNil:
		err = p.PublishAsync(op.topic, body, nil, pc)
	case popAsyncCtx:
		err = p.PublishAsyncContext(ctx, op.topic, body, done, pc)
	case popMPubAsync:
		err = p.MultiPublishAsync(op.topic, call.bufs, done, pc)
	case popMPubAsyncCtx:
		err = p.MultiPublishAsyncContext(ctx, op.topic, call.bufs, done, pc)
	case popDPubAsync:
		err = p.DeferredPublishAsync(op.topic, op.delay, body, done, pc)
	case popDPubAsyncCtx:
		err = p.DeferredPublishAsyncContext(ctx, op.topic, op.delay, body, done, pc)
	case popTry:
		err = p.TryPublishAsync(op.topic, body, done, pc)
	case popByKey:
		err = p.PublishByKey(op.key, op.topic, body)
	case popAsyncByKey:
		err = p.PublishAsyncByKey(op.key, op.topic, body, done, pc)
	}
	if err == ErrStopped {
		ps.sawStopped.Store(true)
	}
	r.mu.Lock()
	call.retErr = err
	call.ctxErr = ctx.Err()
	call.ctxEnded = call.ctxErr != nil
	// ErrTooLarge alone is a refusal at the call (over max_msg_size or
	// max_body_size); once accepted, a publish over a limit nsqd stated
	// ends never sent too.
	refused := err == ErrStopped || err == ErrPendingFull || (errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrNeverSent)) ||
		(call.ctxEnded && err == call.ctxErr)
	call.accepted = !refused
	r.seq++
	pc.retSeq = r.seq
	if !op.kind.async() {
		call.result, call.hasResult = err, true
		pc.endSeq = r.seq
		pc.end = r.now()
	}
	r.traceLocked("caller %d op %d %s %s %s: %v", call.caller, call.op, op.kind, op.topic, strings.Join(shortBodies(call.texts), ","), err)
	r.mu.Unlock()
	if !op.kind.async() || op.kind.mpub() || refused {
		poison(call.bufs)
	}
}

// promptBound is how long a publish may wait while no nsqd can be
// reached: dial_timeout + max_reconnect_backoff, and a little slack.
func (ps *poolSim) promptBound() time.Duration {
	dial := time.Second
	for i := 0; i+1 < len(ps.plan.cfg); i += 2 {
		if ps.plan.cfg[i] == "dial_timeout" {
			dial = ps.plan.cfg[i+1].(time.Duration)
		}
	}
	return dial + ps.plan.maxBackoff + 10*time.Millisecond
}

// allDownLocked reports whether, at now, every fake refuses connections,
// none has one open, and all go on refusing past now + promptBound.
func (ps *poolSim) allDownLocked(now time.Duration) bool {
	for _, np := range ps.plan.nodes {
		if !np.refusing(now) || !np.refusing(now+ps.promptBound()) {
			return false
		}
	}
	for _, sc := range ps.sim.conns {
		if !sc.ended {
			return false
		}
	}
	return true
}

// ---- the invariants ----

// check verifies, once the run is over, the pool's guarantees.
func (ps *poolSim) check() {
	r := ps.sim
	r.mu.Lock()
	defer r.mu.Unlock()
	v := func(format string, args ...any) { r.violations = append(r.violations, fmt.Sprintf(format, args...)) }
	// Accounting: what the callers saw, by outcome, in messages.
	var seenOK, seenUnknown, seenNever, seenRefused, unseen, unseenMsgs, missing int64
	for _, pc := range ps.calls {
		call := pc.sc
		if ps.checkCall(pc, v) {
			missing++
		}
		if !call.accepted {
			continue
		}
		msgs := int64(len(call.texts))
		if !call.hasResult {
			unseen++
			unseenMsgs += msgs
			continue
		}
		switch err := call.result; {
		case err == nil:
			seenOK += msgs
		case errors.Is(err, ErrUnknownOutcome):
			seenUnknown += msgs
		case errors.Is(err, ErrNeverSent):
			seenNever += msgs
		default:
			seenRefused++ // an ErrProtocol refusal, counted by publish (or a violation of checkCall's)
		}
	}
	if d := ps.dropped.Load(); missing != d {
		v("%d async results never arrived, but the pool logged %d dropped after stop_timeout", missing, d)
	}
	st := ps.stats
	for _, c := range []struct {
		name      string
		stat      uint64
		seen      int64
		okMsgsCap bool
	}{{"Published", st.Published, seenOK, true}, {"UnknownOutcome", st.UnknownOutcome, seenUnknown, false}, {"NeverSent", st.NeverSent, seenNever, false}} {
		if int64(c.stat) < c.seen || int64(c.stat) > c.seen+unseenMsgs {
			v("Stats().%s is %d: the callers saw %d messages end so, and %d messages (of %d publishes) have no result they saw", c.name, c.stat, c.seen, unseenMsgs, unseen)
		}
	}
	if st.Published > r.okMsgs {
		v("Stats().Published is %d, but the fakes answered OK to %d messages", st.Published, r.okMsgs)
	}
	var nsqdErrors int64
	for _, n := range st.NsqdErrors {
		nsqdErrors += int64(n)
	}
	if nsqdErrors < seenRefused || nsqdErrors > seenRefused+unseen {
		v("Stats().NsqdErrors counts %d publishes refused by nsqd; the callers saw %d, and %d publishes have no result they saw", nsqdErrors, seenRefused, unseen)
	}
	for node := range ps.plan.nodes {
		var conns []*simConn
		for _, sc := range r.conns {
			if sc.node == node {
				conns = append(conns, sc)
			}
		}
		checkBackoffOf(conns, ps.plan.backoff, ps.plan.maxBackoff, v)
	}
	ps.checkOrder(v)
	ps.checkFlushes(v)
	r.checkResends(v)
}

// checkFlushes checks that a Flush returned nil only once every publish
// accepted before it began had its final result: an async publish
// accepted before and reported ok was answered OK by a command the fake
// read before that Flush returned (its answer came after the read, and
// the publish finished after its answer).
func (ps *poolSim) checkFlushes(v func(string, ...any)) {
	for _, f := range ps.flushes {
		for _, pc := range ps.calls {
			call := pc.sc
			if !pc.kind.async() || !call.accepted || pc.retSeq > f[0] || !call.hasResult || call.result != nil {
				continue
			}
			if cmd := ps.okCmd(call); cmd != nil && cmd.seq > f[1] {
				v("%s: accepted before a Flush began, yet conn#%d read the command it was answered OK to after that Flush returned nil", pc.what(), cmd.conn)
			}
		}
	}
}

// okCmd returns the command answered OK that stored call (the first, if
// the fakes got it more than once: the others are violations of their
// own), or nil.
func (ps *poolSim) okCmd(call *simCall) *simCmd {
	for _, cmd := range ps.sim.bodies[call.texts[0]].received {
		if cmd.answer == "OK" {
			return cmd
		}
	}
	return nil
}

// before reports whether a, answered OK for x, came before b, for y: read
// earlier, or the same command with x's bodies first.
func (ps *poolSim) before(a *simCmd, x *simCall, b *simCmd, y *simCall) bool {
	if a != b {
		return a.seq < b.seq
	}
	return slices.Index(a.msgs, x.texts[0]) < slices.Index(a.msgs, y.texts[0])
}

// checkOrder checks the order the pool promises. Results of one node
// arrive on a doneChan in the order that node completed them (for
// successes: the order the fakes answered them). Publishes of one key
// (PublishByKey, PublishAsyncByKey) made while no node changed state are
// stored on one node, in the order made.
func (ps *poolSim) checkOrder(v func(string, ...any)) {
	r := ps.sim
	node := func(cmd *simCmd) int { return r.conns[cmd.conn].node }
	byCaller := map[int][]*poolCall{}
	for _, pc := range ps.calls {
		byCaller[pc.sc.caller] = append(byCaller[pc.sc.caller], pc)
	}
	for _, calls := range byCaller {
		for i, x := range calls {
			if !x.sc.accepted || !x.sc.hasResult || x.sc.result != nil {
				continue
			}
			cx := ps.okCmd(x.sc)
			if cx == nil {
				continue // reported by checkCall
			}
			for _, y := range calls[i+1:] {
				if !y.sc.accepted || !y.sc.hasResult || y.sc.result != nil {
					continue
				}
				cy := ps.okCmd(y.sc)
				if cy == nil {
					continue
				}
				if x.kind.async() && y.kind.async() && node(cx) == node(cy) && ps.before(cy, y.sc, cx, x.sc) && x.arrival < y.arrival {
					v("%s and %s: stored by node %d in that order, their results arrived in the other", y.what(), x.what(), node(cy))
				}
				if x.key == "" || x.key != y.key || !isKeyed(x.kind) || !isKeyed(y.kind) {
					continue
				}
				if ps.changedBetween(x.startSeq, y.endSeq) || ps.moved(x.sc) || ps.moved(y.sc) {
					continue
				}
				switch {
				case node(cx) != node(cy):
					v("%s and %s: key %s stored on nodes %d and %d while no node changed state", x.what(), y.what(), x.key, node(cx), node(cy))
				case !ps.before(cx, x.sc, cy, y.sc):
					v("%s and %s: key %s stored on node %d in the other order", x.what(), y.what(), x.key, node(cx))
				}
			}
		}
	}
}

func isKeyed(k poolOpKind) bool { return k == popByKey || k == popAsyncByKey }

// changedBetween reports whether the pool logged a node state change
// between the events a and b.
func (ps *poolSim) changedBetween(a, b int) bool {
	for _, c := range ps.changes {
		if c > a && c < b {
			return true
		}
	}
	return false
}

// moved reports whether a fake answered call's single message with a
// failure the pool moves (E_PUB_FAILED, E_DPUB_FAILED).
func (ps *poolSim) moved(call *simCall) bool {
	for _, cmd := range ps.sim.bodies[call.texts[0]].received {
		if movableReason(cmd.answer) && carriesAlone(cmd, call) {
			return true
		}
	}
	return false
}

// checkCall checks one call's outcome against what the fakes received and
// answered. It returns true for an async result that never arrived.
func (ps *poolSim) checkCall(pc *poolCall, v func(string, ...any)) (missing bool) {
	r := ps.sim
	call := pc.sc
	what := pc.what()
	var recv []*simCmd
	for _, text := range call.texts {
		recv = append(recv, r.bodies[text].received...)
	}
	if pc.kind == popTry && call.stopBefore && (call.retErr == nil || call.retErr == ErrPendingFull) {
		v("%s: TryPublishAsync after another call returned ErrStopped (Stop had begun) returned %v, want ErrStopped", what, call.retErr)
	}
	if call.stopReturned && (call.retErr == nil || call.retErr == ErrPendingFull) {
		v("%s: called after Stop returned, it returned %v, want ErrStopped", what, call.retErr)
	}
	if !call.accepted {
		if len(recv) > 0 {
			v("%s: not accepted (%v), yet conn#%d received it", what, call.retErr, recv[0].conn)
		}
		return false
	}
	switch {
	case pc.kind == popAsyncNil:
		return false
	case pc.kind.async() && call.results == 0:
		return true
	}
	err := call.result
	// (Only without a tight pending limit: waiting for room is not part of
	// the bound, and other callers may take the room first.)
	if pc.allDown && ps.plan.maxPending == 65536 && !pc.kind.async() && !pc.kind.syncCtx() && pc.end-pc.start > ps.promptBound() {
		v("%s: every nsqd refused connections, yet it took %s to return %v: want at most dial_timeout + max_reconnect_backoff (%s)",
			what, pc.end-pc.start, err, ps.promptBound())
	}
	if pc.kind.syncCtx() && call.ctxEnded && errors.Is(err, call.ctxErr) {
		if errors.Is(err, ErrNeverSent) {
			if cmd := maybeStored(call, recv); cmd != nil {
				v("%s: returned %v (never sent), yet conn#%d received it and answered %q", what, err, cmd.conn, cmd.answer)
			}
		} else if !errors.Is(err, ErrUnknownOutcome) {
			v("%s: its context ended and it returned %v: want ErrNeverSent or ErrUnknownOutcome beside ctx's error", what, err)
		}
		return false
	}
	if ps.plan.calm && errors.Is(err, ErrNeverSent) && pc.endSeq < ps.stopSeq {
		v("%s: ended %v before Stop, while node 0 took every connection and behaved, and it could have tried every node", what, err)
	}
	var perr ErrProtocol
	switch {
	case err == nil:
		if !r.answeredWith(call, recv, "OK") {
			v("%s: reported success, but no command carrying it was answered OK (received %d times)", what, len(recv))
		}
	case errors.Is(err, ErrNeverSent):
		if cmd := maybeStored(call, recv); cmd != nil {
			v("%s: reported %v (not stored), yet conn#%d received it and answered %q", what, err, cmd.conn, cmd.answer)
		}
	case errors.Is(err, ErrUnknownOutcome):
		if errors.As(err, &perr) && !r.answeredWith(call, recv, perr.Reason) {
			v("%s: reported %q, but no command carrying it was answered so", what, perr.Reason)
		}
	case errors.As(err, &perr):
		if !r.answeredWith(call, recv, perr.Reason) {
			v("%s: reported nsqd's refusal %q, but no command carrying it was answered so", what, perr.Reason)
		}
	default:
		v("%s: an outcome that does not classify: %v", what, err)
	}
	return false
}

// maybeStored returns a command, among those that carried call's bodies,
// that belies "not stored": one left unanswered or answered OK or
// E_MPUB_FAILED (it may be stored), or one refused for good that carried
// call alone (its outcome is that refusal). A command refused that
// carried others too (an automatic batch: nsqd stored none of it), and
// E_PUB_FAILED / E_DPUB_FAILED of the message alone (moved), do not.
func maybeStored(call *simCall, recv []*simCmd) *simCmd {
	for _, cmd := range recv {
		if resendAfter(cmd, call) != "" {
			return cmd
		}
	}
	return nil
}
