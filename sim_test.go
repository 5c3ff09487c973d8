package nsq

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"go.uber.org/goleak"
)

// The hostile-server simulation. A scripted fake nsqd (fakensqd, on the
// in-memory network) takes, at every protocol step (after the magic, after
// IDENTIFY, before the TLS handshake, after the TLS, snappy or deflate
// upgrade, after each command), an action chosen by a seed or by the
// fuzzer's bytes: answer, answer late, send a heartbeat first, send an
// unexpected frame, answer a fatal error and close, close, reset, send half
// a frame, stall. Meanwhile callers mix every kind of publish, context calls
// that time out, Flush, Ping and Stop. Everything runs in a testing/synctest
// bubble: timeouts, backoffs and delays cost no wall time, and a producer
// that never returns is a deadlock the bubble reports. What the goroutine
// scheduler does is not seeded: that is the point of running many seeds.
//
// After each run the invariants of the README's Guarantees are checked
// against what the fake received and answered (every body is unique): see
// simRun.check.
//
//	go test -run TestSimulation .                         # the CI budget: seeds 1 to simCIRuns
//	go test -run TestSimulation -sim.seed=42 -v .         # one seed, with its trace
//	go test -run TestSimulation -sim.duration=10m -v .    # fresh seeds for 10 minutes
//	go test -run XXX -fuzz FuzzSimulation .               # the fuzzer drives the fake

var (
	simDuration = flag.Duration("sim.duration", 0, "run TestSimulation on fresh seeds for this long instead of the CI budget, and report how many schedules it explored")
	simSeedFlag = flag.Uint64("sim.seed", 0, "run TestSimulation on this seed only, and log its trace")
	simSurvey   = flag.Int("sim.survey", 0, "run TestSimulation on seeds 1 to this, without stopping at the first failure, and list the seeds that break each invariant")
)

// simCollect, when set, receives each run's violations instead of the
// test failing with them (-sim.survey).
var simCollect func(seed uint64, violations []string)

// simCIRuns is the CI budget: seeds 1 to simCIRuns, each one schedule.
const simCIRuns = 300

// simChildEnv is set in the environment of the child process that runs the
// CI seeds for TestSimulation (see runSimChild).
const simChildEnv = "NSQKIT_SIMULATION_CHILD"

func TestSimulation(t *testing.T) {
	if *simSeedFlag == 0 && *simSurvey == 0 && *simDuration == 0 && os.Getenv(simChildEnv) == "" {
		runSimChild(t)
		return
	}
	// Here the simulation runs in this process, alone: in the child, or
	// sequentially (a synctest test is never parallel, see runSimChild).
	// A run allocates about 2 MB (deflate windows, large bodies) and keeps
	// little: with a fourth of the collections, the race detector's work
	// on each freed object falls with them (a sixth of the test's time).
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	runSeeds(t, "simulation", seedRuns{seed: *simSeedFlag, survey: *simSurvey, duration: *simDuration, ci: simCIRuns}, runSimSeed)
}

// seedRuns says which seeds a simulation test runs: one seed (with its
// trace), seeds 1 to survey, fresh seeds for duration, or else the CI
// budget, seeds 1 to ci.
type seedRuns struct {
	seed     uint64
	survey   int
	duration time.Duration
	ci       int
}

// runSeeds runs the seeds sr names with run. A survey and a timed run go on
// after a failure, listing at the end the seeds that broke each invariant;
// the CI budget stops at the first failing seed.
func runSeeds(t *testing.T, name string, sr seedRuns, run func(t *testing.T, seed uint64, verbose bool)) {
	switch {
	case sr.seed != 0:
		run(t, sr.seed, true)
	case sr.survey > 0:
		defer surveyKinds(t)()
		for seed := uint64(1); seed <= uint64(sr.survey); seed++ {
			if testing.Verbose() && seed%500 == 0 {
				fmt.Printf("%s: seed %d\n", name, seed)
			}
			run(t, seed, false)
		}
	case sr.duration > 0:
		defer surveyKinds(t)()
		start := time.Now()
		first := uint64(start.UnixNano())
		n := 0
		for ; time.Since(start) < sr.duration; n++ {
			if n%1000 == 0 {
				fmt.Printf("%s: seeds %d to %d\n", name, first+uint64(n), first+uint64(n)+999)
			}
			run(t, first+uint64(n), false)
		}
		fmt.Printf("%s: %d schedules explored in %s (seeds %d to %d)\n", name, n, time.Since(start).Round(time.Second), first, first+uint64(n)-1)
	default:
		for seed := uint64(1); seed <= uint64(sr.ci) && !t.Failed(); seed++ {
			run(t, seed, false)
		}
	}
}

// runSimChild runs the CI seeds of TestSimulation in a child process (this
// test binary again, with -test.run=^TestSimulation$ and simChildEnv set),
// while this test runs in parallel with the others (see parallel): the
// simulation's bubbles share the package's pool of sync transactions
// (resetSyncTxPool), which no test outside them may use at the same time,
// so in this process the simulation could only run sequentially. The child
// runs the same seeds with the same checks, and its TestMain the same leak
// check; its output is this test's log, and its failure this test's. It is
// the child TestMain started early (startSimChildEarly) if there is one.
func runSimChild(t *testing.T) {
	parallel(t)
	c := simEarly.Swap(nil)
	if c == nil {
		timeout := time.Duration(0)
		if deadline, ok := t.Deadline(); ok {
			timeout = time.Until(deadline)
		}
		var err error
		if c, err = newSimChild(timeout); err == nil {
			if err = c.cmd.Start(); err != nil {
				c.output()
			}
		}
		if err != nil {
			t.Fatalf("simulation: starting the child process: %v", err)
		}
	}
	err := c.cmd.Wait()
	out := c.output()
	if err != nil {
		t.Fatalf("simulation (%s): %v\n%s", c, err, out)
	}
	if testing.Verbose() {
		t.Logf("simulation, in a child process:\n%s", out)
	}
}

// simChild is a child process running TestSimulation's CI seeds.
type simChild struct {
	cmd *exec.Cmd
	out *os.File // its output: a file, so that no goroutine of this process copies it
}

func (c *simChild) String() string { return strings.Join(c.cmd.Args, " ") }

// newSimChild returns the child, not started. With a timeout it fails with
// its goroutines' stacks before this test binary's own timeout kills it.
func newSimChild(timeout time.Duration) (*simChild, error) {
	args := []string{"-test.run=^TestSimulation$", "-test.count=1"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	if timeout > 0 {
		args = append(args, "-test.timeout="+(timeout*9/10).Round(time.Second).String())
	}
	out, err := os.CreateTemp("", "nsqkit-simulation-*.log")
	if err != nil {
		return nil, err
	}
	c := &simChild{cmd: exec.Command(os.Args[0], args...), out: out}
	c.cmd.Env = append(os.Environ(), simChildEnv+"=1")
	c.cmd.Stdout, c.cmd.Stderr = out, out
	return c, nil
}

// output returns what the child printed, and removes its file.
func (c *simChild) output() []byte {
	b, _ := os.ReadFile(c.out.Name())
	c.out.Close()
	os.Remove(c.out.Name())
	return b
}

// simEarly is the child startSimChildEarly started, until TestSimulation
// takes it.
var simEarly atomic.Pointer[simChild]

// startSimChildEarly starts TestSimulation's child process from TestMain
// when every test of the package is to run (no -test.run, -test.skip,
// -test.list or -test.fuzz, no -sim flag), so that the simulation runs
// beside the sequential tests too, not only beside the parallel ones. It
// returns the function, for after the tests, that kills the child if no
// TestSimulation took it (-failfast stopped the run first).
func startSimChildEarly() (stop func()) {
	stop = func() {}
	if os.Getenv(simChildEnv) != "" || *simSeedFlag != 0 || *simSurvey > 0 || *simDuration > 0 {
		return stop
	}
	for _, name := range []string{"test.run", "test.skip", "test.list", "test.fuzz"} {
		if f := flag.Lookup(name); f == nil || f.Value.String() != "" {
			return stop
		}
	}
	var timeout time.Duration
	if f := flag.Lookup("test.timeout"); f != nil {
		timeout, _ = time.ParseDuration(f.Value.String())
	}
	c, err := newSimChild(timeout)
	if err != nil {
		return stop // TestSimulation tries again, and reports the error
	}
	if c.cmd.Start() != nil {
		c.output()
		return stop
	}
	simEarly.Store(c)
	return func() {
		if c := simEarly.Swap(nil); c != nil {
			c.cmd.Process.Kill()
			c.cmd.Wait()
			c.output()
		}
	}
}

// surveyKinds makes the runs report their violations to a survey instead of
// failing the test one by one; the function it returns fails the test
// once per kind of violation (numbers masked), naming the seeds.
func surveyKinds(t *testing.T) func() {
	kinds := map[string][]uint64{}
	digits := regexp.MustCompile(`[0-9]+(\.[0-9]+)?(ms|s|µs)?`)
	calls := regexp.MustCompile(`^caller [0-9]+ op [0-9]+ \([^)]*\)`)
	simCollect = func(seed uint64, violations []string) {
		seen := map[string]bool{}
		for _, v := range violations {
			k := digits.ReplaceAllString(calls.ReplaceAllString(v, "a call"), "N")
			if !seen[k] {
				seen[k] = true
				kinds[k] = append(kinds[k], seed)
			}
		}
	}
	return func() {
		simCollect = nil
		for k, seeds := range kinds {
			t.Errorf("%d seeds, first %v: %s", len(seeds), seeds[:min(len(seeds), 8)], k)
		}
	}
}

func FuzzSimulation(f *testing.F) {
	f.Add(uint64(1), []byte{})
	f.Add(uint64(2), []byte{99, 5, 99, 3, 0, 99, 1})
	f.Add(uint64(3), bytes.Repeat([]byte{97, 2}, 32))
	f.Add(uint64(4), []byte{0, 0, 99, 4, 0, 0, 0, 99, 8, 0, 99, 7})
	f.Fuzz(func(t *testing.T, seed uint64, script []byte) {
		plan := newSimPlan(rand.New(rand.NewPCG(seed, 0)))
		plan.hostility = 100 // the bytes decide: see byteChooser
		bc := &byteChooser{b: script}
		runSim(t, seed, plan, func(int) chooser { return bc }, false)
	})
}

// runSimSeed runs one seeded schedule. With -v it names the seed first: a
// panic of the producer (a state it believes impossible) ends the test
// binary, and the last seed named is the one to rerun.
func runSimSeed(t *testing.T, seed uint64, verbose bool) {
	if testing.Verbose() && *simDuration == 0 {
		fmt.Printf("simulation: seed %d\n", seed)
	}
	plan := newSimPlan(rand.New(rand.NewPCG(seed, 0)))
	runSim(t, seed, plan, func(conn int) chooser {
		return rand.New(rand.NewPCG(seed, uint64(conn)+1))
	}, verbose)
}

// chooser makes the fake's choices: a seeded generator, or the fuzzer's
// bytes.
type chooser interface{ IntN(n int) int }

// byteChooser takes its choices from the fuzzer's bytes; once they run out
// it always says 0, which is "behave" (so every run ends).
type byteChooser struct {
	mu sync.Mutex
	b  []byte
}

func (c *byteChooser) IntN(n int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.b) == 0 {
		return 0
	}
	v := int(c.b[0]) % n
	c.b = c.b[1:]
	return v
}

// simOpKind is what a caller does in one step.
type simOpKind int

const (
	opPublish simOpKind = iota
	opPublishCtx
	opMPub
	opMPubCtx
	opDPub
	opDPubCtx
	opAsync
	opAsyncNil
	opAsyncCtx
	opMPubAsync
	opDPubAsync
	opTry
	opFlush
	opPing
	opSleep
	numOpKinds
)

var simOpNames = [...]string{"Publish", "PublishContext", "MultiPublish", "MultiPublishContext", "DeferredPublish",
	"DeferredPublishContext", "PublishAsync", "PublishAsync(nil)", "PublishAsyncContext", "MultiPublishAsync",
	"DeferredPublishAsync", "TryPublishAsync", "Flush", "Ping", "sleep"}

func (k simOpKind) String() string { return simOpNames[k] }

func (k simOpKind) async() bool { return k >= opAsync && k <= opTry }
func (k simOpKind) ctx() bool   { return k == opPublishCtx || k == opMPubCtx || k == opDPubCtx }

type simPlan struct {
	cfg         []any // option/value pairs for testConfig
	tls         bool
	hostility   int // percent of the fake's steps that are hostile
	stopAfter   time.Duration
	stopTimeout time.Duration
	doubleStop  bool // two goroutines call Stop at once
	backoff     time.Duration
	maxBackoff  time.Duration
	callers     []simCallerPlan
}

type simCallerPlan struct {
	doneCap   int           // capacity of the caller's doneChan
	readPause time.Duration // how long its reader pauses after each result
	ops       []simOpPlan
}

type simOpPlan struct {
	kind    simOpKind
	topic   string
	sizes   []int // padding of each body
	delay   time.Duration
	timeout time.Duration
	sleep   time.Duration
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

func newSimPlan(r *rand.Rand) *simPlan {
	p := &simPlan{
		tls:         r.IntN(5) == 0,
		hostility:   pick(r, 5, 15, 30, 60),
		stopAfter:   time.Duration(r.IntN(600)) * time.Millisecond,
		doubleStop:  r.IntN(4) == 0,
		stopTimeout: pick(r, 50*time.Millisecond, 300*time.Millisecond, 2*time.Second),
		backoff:     pick(r, 10*time.Millisecond, 50*time.Millisecond),
	}
	p.maxBackoff = p.backoff * time.Duration(pick(r, 1, 4, 20))
	readTimeout := pick(r, 200*time.Millisecond, time.Second, 5*time.Second)
	p.cfg = []any{
		"stop_timeout", p.stopTimeout,
		"reconnect_backoff", p.backoff,
		"max_reconnect_backoff", p.maxBackoff,
		"read_timeout", readTimeout,
		"heartbeat_interval", readTimeout / 2,
		"write_timeout", pick(r, 100*time.Millisecond, time.Second),
		"max_pending", pick(r, 2, 8, 65536),
		"auto_batch", r.IntN(4) != 0,
		"max_batch_messages", pick(r, 2, 512),
	}
	switch r.IntN(4) {
	case 0:
		p.cfg = append(p.cfg, "snappy", true)
	case 1:
		p.cfg = append(p.cfg, "deflate", true, "deflate_level", 1+r.IntN(9))
	}
	if p.tls {
		p.cfg = append(p.cfg, "tls_v1", true)
	}
	for range 1 + r.IntN(4) {
		c := simCallerPlan{doneCap: pick(r, 0, 1, 1000), readPause: pick(r, 0, 0, time.Millisecond, 50*time.Millisecond, 500*time.Millisecond)}
		for range 1 + r.IntN(12) {
			op := simOpPlan{kind: simOpKind(r.IntN(int(numOpKinds))), topic: pick(r, "sim0", "sim1")}
			n := 1
			if op.kind == opMPub || op.kind == opMPubCtx || op.kind == opMPubAsync {
				n = 1 + r.IntN(3)
			}
			for range n {
				size := r.IntN(40)
				switch r.IntN(50) {
				case 0:
					size = 300 << 10 // more than the in-memory connection holds unread
				case 1, 2, 3:
					size = 1<<10 + r.IntN(20<<10)
				}
				op.sizes = append(op.sizes, size)
			}
			op.delay = time.Duration(r.IntN(3)) * time.Second
			op.timeout = pick(r, time.Millisecond, 20*time.Millisecond, 300*time.Millisecond)
			op.sleep = pick(r, 0, 0, time.Millisecond, 30*time.Millisecond, 200*time.Millisecond)
			c.ops = append(c.ops, op)
		}
		p.callers = append(p.callers, c)
	}
	return p
}

// runSim runs one schedule in a synctest bubble and checks it.
func runSim(t *testing.T, seed uint64, plan *simPlan, newChooser func(conn int) chooser, verbose bool) {
	t.Helper()
	resetSyncTxPool()
	defer resetSyncTxPool()
	defer func() {
		// A producer goroutine blocked for good makes synctest.Test panic
		// once the run has returned; the run has reported it already.
		if r := recover(); r != nil {
			if simCollect != nil {
				simCollect(seed, []string{fmt.Sprint(r)})
				return
			}
			t.Errorf("simulation seed %d: %v", seed, r)
		}
	}()
	synctest.Test(t, func(t *testing.T) {
		r := &simRun{t: t, seed: seed, plan: plan, newChooser: newChooser, verbose: verbose,
			bodies: make(map[string]*simBody), runEnd: make(chan struct{}), strictResend: true}
		r.run()
	})
}

// resetSyncTxPool empties the pools of sync transactions (the Producer's
// and the ProducerPool's): each carries a channel that belongs to the
// synctest bubble that made it, which no other bubble (nor the outside) may
// use.
func resetSyncTxPool() {
	syncTxPool = sync.Pool{New: syncTxPool.New}
	syncTxs = sync.Pool{New: syncTxs.New}
}

// simRun is one run of the simulation.
type simRun struct {
	t          *testing.T
	seed       uint64
	plan       *simPlan
	newChooser func(conn int) chooser
	verbose    bool

	start  time.Time
	srv    *fakensqd.Server
	srvWG  sync.WaitGroup
	runEnd chan struct{} // closed once the producer has stopped: stalled conns end

	published    uint64 // Stats().Published once Stop returned
	okMsgs       uint64 // messages in the commands the fake answered OK
	stopReturned atomic.Bool
	sawStopped   atomic.Bool  // a call returned ErrStopped
	dropped      atomic.Int64 // results the producer dropped after stop_timeout, from its log

	mu         sync.Mutex
	conns      []*simConn
	bodies     map[string]*simBody // by the body's text
	calls      []*simCall
	violations []string
	trace      []string
	seq        int // orders the events the run records (commands read, and TestPoolSimulation's own)

	// strictResend makes check verify that a body is never received again
	// after a command that may have stored it or that refused it alone for
	// good (checkResends), instead of record checking only "after OK".
	strictResend bool
	// reasons, when set, gives the error frames the fake may answer to a
	// publish command, by the command (TestPoolSimulation's: codes that
	// match the command, as nsqd's do); else fatalReasons["publish"].
	reasons func(rec *simCmd) []string
}

// simConn is what the fake saw of one connection.
type simConn struct {
	id            int
	acceptAt      time.Time
	endAt         time.Time
	handshakeDone bool // the fake answered the whole handshake
	answered      bool // the fake answered a publish (OK or error)
	ended         bool
	endedBy       string
	heartbeats    int // heartbeats the fake sent
	nops          int // NOPs it read
	node          int // which fake nsqd accepted it (TestPoolSimulation)
	hostility     int // percent of the fake's steps on it that are hostile
}

// simBody is one body of one call, and what the fake did with it.
type simBody struct {
	call     *simCall
	received []*simCmd // commands that carried it
}

// simCmd is one publish command the fake read.
type simCmd struct {
	seq    int // when the fake read it, in the run's event order (simRun.seq)
	conn   int
	name   string
	topic  string
	delay  string
	msgs   []string
	answer string // "", "OK", or the error frame's text
}

// simCall is one publish call and its outcome.
type simCall struct {
	caller, op   int
	kind         simOpKind
	topic        string
	delay        time.Duration
	texts        []string // the bodies as given
	bufs         [][]byte // the caller's buffers, poisoned once the producer may no longer read them
	retErr       error    // what the call returned
	accepted     bool
	result       error // the outcome: the sync return, or the async result
	hasResult    bool
	results      int // async results received
	ctxEnded     bool
	ctxErr       error
	stopBefore   bool // a call had returned ErrStopped before this one began: Stop had begun
	stopReturned bool // Stop had returned before the call
}

func (r *simRun) now() time.Duration { return time.Since(r.start) }

func (r *simRun) tracef(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.traceLocked(format, args...)
}

func (r *simRun) traceLocked(format string, args ...any) {
	if len(r.trace) < 2000 {
		r.trace = append(r.trace, fmt.Sprintf("%9s ", r.now())+fmt.Sprintf(format, args...))
	}
}

func (r *simRun) violate(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	r.violations = append(r.violations, msg)
	r.traceLocked("VIOLATION: %s", msg)
}

// run is the whole run: the fake, the callers, Stop, the checks.
func (r *simRun) run() {
	before := goleak.IgnoreCurrent()
	r.start = time.Now()
	r.srv = fakensqd.NewMem(r.t)
	r.srvWG.Add(1)
	go r.acceptLoop()

	cfg := testConfig(r.t, r.plan.cfg...)
	if r.plan.tls {
		cfg.TlsConfig = &tls.Config{InsecureSkipVerify: true} // the fake's certificate is self-signed
	}
	p, err := NewProducer(r.srv.Addr(), cfg)
	if err != nil {
		r.t.Fatalf("simulation seed %d: NewProducer: %v", r.seed, err)
	}
	p.SetLogger(&simLogger{r: r}, LogLevelInfo)

	var callers sync.WaitGroup
	var doneChans []chan *ProducerTransaction
	var readers sync.WaitGroup
	for i, cp := range r.plan.callers {
		done := make(chan *ProducerTransaction, cp.doneCap)
		doneChans = append(doneChans, done)
		readers.Add(1)
		go r.reader(i, cp.readPause, done, &readers)
		callers.Add(1)
		go r.caller(p, i, cp, done, &callers)
	}

	time.Sleep(r.plan.stopAfter)
	if !r.stop(p) {
		r.report()
		return // the bubble reports the goroutines blocked for good
	}
	callersDone := make(chan struct{})
	go func() { callers.Wait(); close(callersDone) }()
	select {
	case <-callersDone:
	case <-time.After(time.Minute):
		r.violate("a call did not return within a minute after Stop returned")
		r.report()
		return
	}
	r.afterStop(p, before)
	// The producer sends nothing more once Stop has returned: a send on a
	// closed doneChan panics.
	for _, done := range doneChans {
		close(done)
	}
	readers.Wait()
	close(r.runEnd)
	r.srv.Close()
	r.srvWG.Wait()

	r.check()
	r.report()
}

// stop calls Stop (from two goroutines at once, as the plan says), which
// must return within stop_timeout plus a small slack; it returns false if
// Stop never returns.
func (r *simRun) stop(p *Producer) bool {
	r.tracef("Stop")
	stopped := make(chan struct{})
	start := time.Now()
	if r.plan.doubleStop {
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
	select {
	case <-stopped:
		r.stopReturned.Store(true)
		r.tracef("Stop returned after %s", time.Since(start))
		return true
	case <-time.After(r.plan.stopTimeout + slack):
	}
	r.violate("Stop did not return within stop_timeout (%s) + %s", r.plan.stopTimeout, slack)
	r.tracef("goroutines of the producer:\n%s", producerStacks())
	select {
	case <-stopped:
		r.stopReturned.Store(true)
		r.violate("Stop returned after %s", time.Since(start))
		return true
	case <-time.After(time.Hour):
		r.violate("Stop did not return within an hour")
		return false
	}
}

// afterStop checks, once Stop has returned and no call is in progress,
// that nothing is pending and no goroutine of the producer is left.
func (r *simRun) afterStop(p *Producer, before goleak.Option) {
	// A call racing Stop takes room before it sees ErrStopped: hence once
	// no call is in progress. The stats count no more successes than nsqd
	// answered OK, no fewer than the callers saw (see check).
	st := p.Stats()
	if st.Pending != 0 || st.PendingBytes != 0 {
		r.violate("after Stop, Stats says %d publishes (%d bytes) pending", st.Pending, st.PendingBytes)
	}
	r.published = st.Published
	// Wait first for every goroutine of the bubble to be blocked or gone:
	// one that has signalled its exit may still be returning.
	synctest.Wait()
	if err := goleak.Find(before,
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq.(*simRun).acceptLoop"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq.(*simRun).serve"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq.(*simRun).serve.func1"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq.(*simRun).reader"),
		goleak.IgnoreAnyFunction("github.com/nsqkit/go-nsq/internal/fakensqd.(*Server).acceptLoop"),
	); err != nil {
		r.violate("goroutines survived Stop: %v", err)
	}
}

// producerStacks returns the stacks of the goroutines running the
// package's own code, to show where a producer is stuck.
func producerStacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "nsqkit/go-nsq.(*") && !strings.Contains(g, "(*simRun)") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func (r *simRun) report() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if simCollect != nil {
		simCollect(r.seed, r.violations)
		return
	}
	if len(r.violations) == 0 {
		if r.verbose {
			r.t.Logf("seed %d: no violation; trace:\n%s", r.seed, strings.Join(r.trace, "\n"))
		}
		return
	}
	r.t.Errorf("simulation seed %d: %d violations (rerun: go test -run TestSimulation -sim.seed=%d -v .):\n  %s\ntrace:\n%s",
		r.seed, len(r.violations), r.seed, strings.Join(r.violations, "\n  "), strings.Join(r.trace, "\n"))
}

// simLogger counts the results the producer drops after stop_timeout and
// traces its warnings.
type simLogger struct{ r *simRun }

var droppedRE = regexp.MustCompile(`(\d+) results dropped`)

func (l *simLogger) Output(_ int, s string) error {
	switch {
	case strings.Contains(s, "result dropped"):
		l.r.dropped.Add(1)
	case droppedRE.MatchString(s):
		n, _ := strconv.Atoi(droppedRE.FindStringSubmatch(s)[1])
		l.r.dropped.Add(int64(n))
	}
	l.r.tracef("log: %s", s)
	return nil
}

// ---- the fake nsqd ----

func (r *simRun) acceptLoop() {
	defer r.srvWG.Done()
	for i := 0; ; i++ {
		c, err := r.srv.AcceptTimeout(24 * time.Hour)
		if err != nil {
			return
		}
		sc := &simConn{id: i, acceptAt: time.Now(), hostility: r.plan.hostility}
		r.mu.Lock()
		r.conns = append(r.conns, sc)
		r.traceLocked("conn#%d accepted", i)
		r.mu.Unlock()
		r.srvWG.Add(1)
		go r.serve(sc, c)
	}
}

// The fake's actions at a step.
const (
	actBehave = iota
	actDelay
	actHeartbeat
	actUnexpected
	actFatal
	actClose
	actReset
	actHalf
	actStall
	numActs
)

var actNames = [...]string{"behave", "delay", "heartbeat", "unexpected frame", "fatal error", "close", "reset", "half frame", "stall"}

var (
	frameOK        = fakensqd.AppendFrame(nil, fakensqd.FrameTypeResponse, []byte("OK"))
	frameHeartbeat = fakensqd.AppendFrame(nil, fakensqd.FrameTypeResponse, []byte("_heartbeat_"))
	unexpected     = [][]byte{
		fakensqd.AppendFrame(nil, fakensqd.FrameTypeMessage, make([]byte, 30)),
		fakensqd.AppendFrame(nil, 7, []byte("OK")),
		fakensqd.AppendFrame(nil, fakensqd.FrameTypeResponse, []byte("FOO")),
	}
	fatalReasons = map[string][]string{
		"magic":    {"E_BAD_PROTOCOL unsupported protocol version"},
		"IDENTIFY": {"E_BAD_BODY IDENTIFY failed to decode JSON body", "E_INVALID cannot IDENTIFY in current state"},
		"upgrade":  {"E_INVALID upgrade failed"},
		"publish": {"E_BAD_MESSAGE PUB bad message", "E_PUB_FAILED PUB failed", "E_MPUB_FAILED MPUB failed",
			"E_BAD_TOPIC PUB topic name is not valid", "E_BAD_BODY MPUB invalid body size", "E_INVALID invalid command",
			"E_BAD_MESSAGE PUB message too big 1000000 > 999999", "E_BAD_MESSAGE PUB message too big 70 > 64",
			"E_BAD_BODY MPUB body too big 300 > 200"},
	}
	delays = []time.Duration{time.Millisecond, 20 * time.Millisecond, 150 * time.Millisecond, time.Second, 6 * time.Second}
)

var simTLS struct {
	once   sync.Once
	config *tls.Config
}

// simTLSConfig returns the fake's TLS configuration: a self-signed ECDSA
// certificate valid from 1990 to 2200 (a synctest bubble's clock starts in
// 2000), made once.
func simTLSConfig() *tls.Config {
	simTLS.once.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "fakensqd"},
			NotBefore:    time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC),
			NotAfter:     time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		simTLS.config = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	})
	return simTLS.config
}

// serve plays nsqd on one connection, taking a hostile action at each step
// with the plan's probability.
func (r *simRun) serve(sc *simConn, c *fakensqd.Conn) {
	defer r.srvWG.Done()
	ch := r.newChooser(sc.id)
	// The connection ends when the first side closes it: the fake may be
	// asleep (a delay) when the client gives up.
	r.srvWG.Add(1)
	go func() {
		defer r.srvWG.Done()
		select {
		case <-c.PeerClosed():
			r.mu.Lock()
			if !sc.ended {
				sc.ended, sc.endAt, sc.endedBy = true, time.Now(), "client"
			}
			r.mu.Unlock()
		case <-r.runEnd:
		}
	}()
	defer func() {
		r.mu.Lock()
		if !sc.ended {
			sc.ended, sc.endAt, sc.endedBy = true, time.Now(), "client"
		}
		r.traceLocked("conn#%d over (%s)", sc.id, sc.endedBy)
		r.mu.Unlock()
	}()
	if !r.handshake(sc, c, ch) {
		return
	}
	r.mu.Lock()
	sc.handshakeDone = true
	r.mu.Unlock()
	for {
		cmd, err := c.TryReadCommand(0)
		if err != nil {
			return
		}
		if cmd.Name == "NOP" {
			r.mu.Lock()
			sc.nops++
			r.traceLocked("conn#%d NOP", sc.id)
			r.mu.Unlock()
			if !r.act(sc, c, ch, "NOP", nil, nil) {
				return
			}
			continue
		}
		rec := r.record(sc, cmd)
		if rec == nil {
			r.end(sc, c, "close")
			return
		}
		if !r.act(sc, c, ch, "publish", frameOK, rec) {
			return
		}
	}
}

// handshake plays nsqd's side of the handshake, hostile at each step; it
// returns whether the connection goes on.
func (r *simRun) handshake(sc *simConn, c *fakensqd.Conn, ch chooser) bool {
	if err := c.TryReadMagic(0); err != nil {
		return false
	}
	if !r.act(sc, c, ch, "magic", nil, nil) {
		return false
	}
	cmd, err := c.TryReadCommand(0)
	if err != nil {
		return false
	}
	if cmd.Name != "IDENTIFY" {
		r.violate("conn#%d: the client sent %s where IDENTIFY was due", sc.id, cmd)
		r.end(sc, c, "close")
		return false
	}
	var req map[string]any
	if err := json.Unmarshal(cmd.Body, &req); err != nil {
		r.violate("conn#%d: IDENTIFY body is not JSON: %v", sc.id, err)
		r.end(sc, c, "close")
		return false
	}
	// The fake usually grants what the client asks for.
	resp := fakensqd.DefaultIdentifyResponse()
	grantTLS := req["tls_v1"] == true && ch.IntN(6) != 5
	grantSnappy := req["snappy"] == true && ch.IntN(6) != 5
	grantDeflate := req["deflate"] == true && ch.IntN(6) != 5
	resp["tls_v1"], resp["snappy"], resp["deflate"] = grantTLS, grantSnappy, grantDeflate
	js, _ := json.Marshal(resp)
	if !r.act(sc, c, ch, "IDENTIFY", fakensqd.AppendFrame(nil, fakensqd.FrameTypeResponse, js), nil) {
		return false
	}
	if grantTLS {
		if !r.act(sc, c, ch, "TLS handshake", nil, nil) {
			return false
		}
		if err := c.UpgradeTLS(simTLSConfig()); err != nil {
			r.tracef("conn#%d: %v", sc.id, err)
			r.end(sc, c, "close")
			return false
		}
		if !r.act(sc, c, ch, "upgrade", frameOK, nil) {
			return false
		}
	}
	if grantSnappy || grantDeflate {
		var err error
		if grantSnappy {
			err = c.UpgradeSnappy()
		} else {
			level, _ := req["deflate_level"].(float64)
			err = c.UpgradeDeflate(int(level))
		}
		if err != nil {
			r.violate("conn#%d: compression upgrade: %v", sc.id, err)
			r.end(sc, c, "close")
			return false
		}
		if !r.act(sc, c, ch, "upgrade", frameOK, nil) {
			return false
		}
	}
	return true
}

// act takes the action at step: behave (write answer, if any), or
// something hostile. It returns whether the connection goes on.
func (r *simRun) act(sc *simConn, c *fakensqd.Conn, ch chooser, step string, answer []byte, rec *simCmd) bool {
	a := actBehave
	if ch.IntN(100) >= 100-sc.hostility {
		a = ch.IntN(numActs)
	}
	if a != actBehave {
		r.tracef("conn#%d after %s: %s", sc.id, step, actNames[a])
	}
	switch a {
	case actDelay:
		time.Sleep(delays[ch.IntN(len(delays))])
	case actHeartbeat:
		if c.TryWrite(frameHeartbeat) != nil {
			return r.end(sc, c, "")
		}
		r.mu.Lock()
		sc.heartbeats++
		r.mu.Unlock()
	case actUnexpected:
		if c.TryWrite(unexpected[ch.IntN(len(unexpected))]) != nil {
			return r.end(sc, c, "")
		}
	case actFatal:
		reasons := fatalReasons[step]
		if rec != nil && r.reasons != nil {
			reasons = r.reasons(rec)
		}
		if reasons == nil {
			// nsqd never answers a NOP: an error then would be taken, by
			// any client, for the answer to the publish pending before it.
			return r.end(sc, c, "close")
		}
		reason := reasons[ch.IntN(len(reasons))]
		if c.TryWrite(fakensqd.AppendFrame(nil, fakensqd.FrameTypeError, []byte(reason))) == nil {
			r.answered(sc, rec, reason)
		}
		return r.end(sc, c, "close")
	case actClose:
		return r.end(sc, c, "close")
	case actReset:
		return r.end(sc, c, "reset")
	case actHalf:
		b := answer
		if b == nil {
			b = frameHeartbeat
		}
		c.TryWrite(b[:1+ch.IntN(len(b)-1)])
		return r.end(sc, c, pick2(ch, "close", "reset", "stall"))
	case actStall:
		return r.end(sc, c, "stall")
	}
	if answer == nil {
		return true
	}
	if c.TryWrite(answer) != nil {
		return r.end(sc, c, "")
	}
	r.answered(sc, rec, "OK")
	return true
}

func pick2(ch chooser, xs ...string) string { return xs[ch.IntN(len(xs))] }

// answered records that the fake answered rec (nil: not a publish).
func (r *simRun) answered(sc *simConn, rec *simCmd, answer string) {
	if rec == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rec.answer = answer
	sc.answered = true
	if answer == "OK" {
		r.okMsgs += uint64(len(rec.msgs))
	}
	r.traceLocked("conn#%d answered %s %s: %s", sc.id, rec.name, strings.Join(shortBodies(rec.msgs), ","), answer)
}

// end ends the connection: how is "close", "reset", "stall" (wait for the
// client to give up), or "" (the client is gone already). It returns false.
func (r *simRun) end(sc *simConn, c *fakensqd.Conn, how string) bool {
	switch how {
	case "close":
		c.Close()
	case "reset":
		c.Reset()
	case "stall":
		select {
		case <-c.PeerClosed():
		case <-r.runEnd:
		}
		c.Close()
		how = "stall, then the client closed"
	default:
		how = "client"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !sc.ended {
		sc.ended, sc.endAt, sc.endedBy = true, time.Now(), how
	}
	return false
}

// record notes a publish command the fake read, and checks what can be
// checked at once. It returns nil for a command a producer must not send.
func (r *simRun) record(sc *simConn, cmd fakensqd.Command) *simCmd {
	rec := &simCmd{conn: sc.id, name: cmd.Name}
	switch cmd.Name {
	case "PUB":
		rec.msgs = []string{string(cmd.Body)}
	case "DPUB":
		rec.msgs = []string{string(cmd.Body)}
		if len(cmd.Params) == 2 {
			rec.delay = cmd.Params[1]
		}
	case "MPUB":
		for _, m := range cmd.Messages {
			rec.msgs = append(rec.msgs, string(m))
		}
	default:
		r.violate("conn#%d: the client sent %s after the handshake", sc.id, cmd)
		return nil
	}
	if len(cmd.Params) > 0 {
		rec.topic = cmd.Params[0]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	rec.seq = r.seq
	r.traceLocked("conn#%d got %s %s %s", sc.id, rec.name, rec.topic, strings.Join(shortBodies(rec.msgs), ","))
	for _, m := range rec.msgs {
		if strings.Contains(m, "!") {
			r.violations = append(r.violations, fmt.Sprintf("conn#%d: %s carried a body the caller had reused (overwritten with '!') after its call returned or its result arrived", sc.id, rec.name))
			continue
		}
		b := r.bodies[m]
		if b == nil {
			r.violations = append(r.violations, fmt.Sprintf("conn#%d: %s carried a body no caller gave: %.40q", sc.id, rec.name, m))
			continue
		}
		for _, prev := range b.received {
			if prev.answer == "OK" && !r.strictResend { // else checkResends, once every answer is known
				r.violations = append(r.violations, fmt.Sprintf("conn#%d: body %s sent again after conn#%d answered OK to it", sc.id, shortBody(m), prev.conn))
			}
		}
		b.received = append(b.received, rec)
	}
	return rec
}

func shortBody(m string) string {
	if i := strings.LastIndexByte(m, '.'); i >= 0 {
		return m[:i]
	}
	return m
}

func shortBodies(ms []string) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = shortBody(m)
	}
	return out
}

// ---- the callers ----

// reader takes a caller's async results, in order, pausing after each.
func (r *simRun) reader(caller int, pause time.Duration, done chan *ProducerTransaction, wg *sync.WaitGroup) {
	defer wg.Done()
	last := -1
	for tx := range done {
		call := tx.Args[0].(*simCall)
		r.mu.Lock()
		call.results++
		if call.results > 1 {
			r.violations = append(r.violations, fmt.Sprintf("caller %d op %d (%s): result delivered %d times", caller, call.op, call.kind, call.results))
		}
		if call.op < last {
			r.violations = append(r.violations, fmt.Sprintf("caller %d: result of op %d arrived after that of op %d", caller, call.op, last))
		}
		last = call.op
		call.result, call.hasResult = tx.Error, true
		r.traceLocked("caller %d op %d (%s) result: %v", caller, call.op, call.kind, tx.Error)
		r.mu.Unlock()
		if call.kind != opMPubAsync { // its bodies were copied, and reused at once
			// The producer is done with the body: reuse it.
			poison(call.bufs)
		}
		time.Sleep(pause) // a slow reader: its results wait, with a courier
	}
}

func poison(bufs [][]byte) {
	for _, b := range bufs {
		for i := range b {
			b[i] = '!'
		}
	}
}

// caller runs one caller's operations, in order.
func (r *simRun) caller(p *Producer, i int, cp simCallerPlan, done chan *ProducerTransaction, wg *sync.WaitGroup) {
	defer wg.Done()
	for j, op := range cp.ops {
		if op.kind == opSleep {
			time.Sleep(op.sleep)
			continue
		}
		if op.kind == opFlush {
			ctx, cancel := context.WithTimeout(context.Background(), op.timeout)
			err := p.Flush(ctx)
			if err != nil && err != ErrStopped && !errors.Is(err, ctx.Err()) {
				r.violate("caller %d op %d: Flush returned %v: want nil, ctx's error or ErrStopped", i, j, err)
			}
			r.tracef("caller %d op %d Flush: %v", i, j, err)
			cancel()
			continue
		}
		if op.kind == opPing {
			// Any error may keep its NOP from being written; after Stop
			// returned, only ErrStopped.
			stopped := r.stopReturned.Load()
			err := p.Ping()
			if stopped && err != ErrStopped {
				r.violate("caller %d op %d: Ping after Stop returned %v, want ErrStopped", i, j, err)
			}
			r.tracef("caller %d op %d Ping: %v", i, j, err)
			continue
		}
		call := &simCall{caller: i, op: j, kind: op.kind, topic: op.topic, delay: op.delay,
			stopBefore: r.sawStopped.Load(), stopReturned: r.stopReturned.Load()}
		for m, pad := range op.sizes {
			text := fmt.Sprintf("s%d.c%d.o%d.m%d.", r.seed, i, j, m) + strings.Repeat("x", pad)
			call.texts = append(call.texts, text)
			call.bufs = append(call.bufs, []byte(text))
		}
		r.mu.Lock()
		for _, text := range call.texts {
			r.bodies[text] = &simBody{call: call}
		}
		r.calls = append(r.calls, call)
		r.mu.Unlock()
		r.do(p, call, op, done)
		time.Sleep(op.sleep)
	}
}

// do makes one call and records what it returned.
func (r *simRun) do(p *Producer, call *simCall, op simOpPlan, done chan *ProducerTransaction) {
	var err error
	ctx := context.Background()
	if op.kind.ctx() || op.kind == opAsyncCtx {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, op.timeout)
		defer cancel()
	}
	body := call.bufs[0]
	switch op.kind {
	case opPublish:
		err = p.Publish(op.topic, body)
	case opPublishCtx:
		err = p.PublishContext(ctx, op.topic, body)
	case opMPub:
		err = p.MultiPublish(op.topic, call.bufs)
	case opMPubCtx:
		err = p.MultiPublishContext(ctx, op.topic, call.bufs)
	case opDPub:
		err = p.DeferredPublish(op.topic, op.delay, body)
	case opDPubCtx:
		err = p.DeferredPublishContext(ctx, op.topic, op.delay, body)
	case opAsync:
		err = p.PublishAsync(op.topic, body, done, call)
	case opAsyncNil:
		err = p.PublishAsync(op.topic, body, nil, call)
	case opAsyncCtx:
		err = p.PublishAsyncContext(ctx, op.topic, body, done, call)
	case opMPubAsync:
		err = p.MultiPublishAsync(op.topic, call.bufs, done, call)
	case opDPubAsync:
		err = p.DeferredPublishAsync(op.topic, op.delay, body, done, call)
	case opTry:
		err = p.TryPublishAsync(op.topic, body, done, call)
	}
	if err == ErrStopped {
		r.sawStopped.Store(true)
	}
	r.mu.Lock()
	call.retErr = err
	call.ctxErr = ctx.Err()
	call.ctxEnded = call.ctxErr != nil
	refused := err == ErrStopped || err == ErrPendingFull || errors.Is(err, ErrTooLarge) || (call.ctxEnded && err == call.ctxErr)
	call.accepted = !refused
	if !op.kind.async() {
		call.result, call.hasResult = err, true
	}
	r.traceLocked("caller %d op %d %s %s %s: %v", call.caller, call.op, op.kind, op.topic, strings.Join(shortBodies(call.texts), ","), err)
	r.mu.Unlock()
	if !op.kind.async() || op.kind == opMPubAsync || (refused && op.kind != opAsyncNil) {
		// A sync call's bodies, MultiPublishAsync's (copied), and those of
		// a call refused may be reused once it returns.
		poison(call.bufs)
	}
}

// ---- the invariants ----

// check verifies, once the run is over, every invariant that needs the
// whole story.
func (r *simRun) check() {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := func(format string, args ...any) { r.violations = append(r.violations, fmt.Sprintf(format, args...)) }
	missing := int64(0)
	for _, call := range r.calls {
		if r.checkCall(call, v) {
			missing++
		}
	}
	if d := r.dropped.Load(); missing != d {
		v("%d async results never arrived, but the producer logged %d dropped after stop_timeout", missing, d)
	}
	seen := uint64(0)
	for _, call := range r.calls {
		if call.hasResult && call.result == nil && call.accepted {
			seen += uint64(len(call.texts))
		}
	}
	if r.published > r.okMsgs || r.published < seen {
		v("Stats().Published is %d: the fake answered OK to %d messages, the callers saw %d succeed", r.published, r.okMsgs, seen)
	}
	r.checkBackoff(v)
	r.checkNOPs(v)
	if r.strictResend {
		r.checkResends(v)
	}
}

// checkResends checks, once the run is over and every answer is known, that
// no body was received again after a command that left it unanswered,
// answered OK or E_MPUB_FAILED, or refused it alone for good (see
// resendAfter). (At the time a fake reads a command, the answer of an
// earlier one may not be recorded yet: the client can have it, and act on
// it, first.)
func (r *simRun) checkResends(v func(string, ...any)) {
	for text, b := range r.bodies {
		for i, prev := range b.received {
			if why := resendAfter(prev, b.call); why != "" {
				for _, next := range b.received[i+1:] {
					v("conn#%d: body %s sent again after conn#%d %s", next.conn, shortBody(text), prev.conn, why)
				}
				break
			}
		}
	}
}

// checkCall checks one call's outcome against what the fake received and
// answered. It returns true for an async result that never arrived.
func (r *simRun) checkCall(call *simCall, v func(string, ...any)) (missing bool) {
	what := fmt.Sprintf("caller %d op %d (%s %s)", call.caller, call.op, call.kind, strings.Join(shortBodies(call.texts), ","))
	var recv []*simCmd
	for _, text := range call.texts {
		recv = append(recv, r.bodies[text].received...)
	}
	// Once Stop has begun nothing is accepted, and "no room" (retry) would
	// be a lie: ErrStopped, or a refusal of the call's own input.
	if call.kind == opTry && call.stopBefore && (call.retErr == nil || call.retErr == ErrPendingFull) {
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
	case call.kind == opAsyncNil:
		return false // its outcome is not known
	case call.kind.async() && call.results == 0:
		return true
	}
	err := call.result
	if call.kind.ctx() && call.ctxEnded && errors.Is(err, call.ctxErr) {
		// The call gave up waiting: withdrawn (never sent) or not.
		if errors.Is(err, ErrNeverSent) {
			if cmd := r.sentAndMaybeStored(call, recv); cmd != nil {
				v("%s: returned %v (never sent), yet conn#%d received it and answered %q", what, err, cmd.conn, cmd.answer)
			}
		}
		return false
	}
	var perr ErrProtocol
	switch {
	case err == nil:
		if !r.answeredWith(call, recv, "OK") {
			v("%s: reported success, but no command carrying it was answered OK (received %d times)", what, len(recv))
		}
	case errors.Is(err, ErrNeverSent):
		if cmd := r.sentAndMaybeStored(call, recv); cmd != nil {
			v("%s: reported %v (never sent), yet conn#%d received it and answered %q", what, err, cmd.conn, cmd.answer)
		}
	case errors.Is(err, ErrUnknownOutcome):
	case errors.As(err, &perr):
		if !r.answeredWith(call, recv, perr.Reason) {
			v("%s: reported nsqd's refusal %q, but no command carrying it was answered so", what, perr.Reason)
		}
	default:
		v("%s: an outcome that does not classify: %v", what, err)
	}
	return false
}

// checkNOPs checks that each heartbeat is answered with at most one NOP
// (two due at once make one); Pings write the others.
func (r *simRun) checkNOPs(v func(string, ...any)) {
	pings := 0
	for _, cp := range r.plan.callers {
		for _, op := range cp.ops {
			if op.kind == opPing {
				pings++
			}
		}
	}
	for _, sc := range r.conns {
		if sc.nops > sc.heartbeats+pings {
			v("conn#%d: %d NOPs for %d heartbeats and %d Pings in the whole run", sc.id, sc.nops, sc.heartbeats, pings)
		}
	}
}

// sentAndMaybeStored returns a command, among those that carried call's
// bodies, that belies a "never sent": one left unanswered or answered OK
// or E_MPUB_FAILED (it may be stored), or one refused that carried call
// alone (its outcome is nsqd's refusal). An automatic batch that the fake
// refused as a whole stored nothing: its messages are sent again, and may
// end never sent.
func (r *simRun) sentAndMaybeStored(call *simCall, recv []*simCmd) *simCmd {
	for _, cmd := range recv {
		if !strings.HasPrefix(cmd.answer, "E_") || strings.HasPrefix(cmd.answer, "E_MPUB_FAILED") || slices.Equal(cmd.msgs, call.texts) {
			return cmd
		}
	}
	return nil
}

// answeredWith reports whether one command that carried call's bodies
// (for a PUB: in a PUB or an automatic MPUB; for a MultiPublish: in an MPUB,
// all of them in order, alone or merged with others into an automatic MPUB;
// for a DPUB: with its delay) got answer.
func (r *simRun) answeredWith(call *simCall, recv []*simCmd, answer string) bool {
	for _, cmd := range recv {
		if cmd.answer != answer || cmd.topic != call.topic {
			continue
		}
		switch call.kind {
		case opMPub, opMPubCtx, opMPubAsync:
			if cmd.name == "MPUB" && containsRun(cmd.msgs, call.texts) {
				return true
			}
		case opDPub, opDPubCtx, opDPubAsync:
			if cmd.name == "DPUB" && cmd.delay == strconv.FormatInt(call.delay.Milliseconds(), 10) {
				return true
			}
		default:
			if cmd.name == "PUB" || cmd.name == "MPUB" {
				return true
			}
		}
	}
	return false
}

// checkBackoff checks that connections come no faster than the backoff
// allows: after n consecutive failed connections (the handshake failed, or
// it died unanswered within reconnect_backoff) the next one waits at least
// the lower half of the n-th backoff.
func (r *simRun) checkBackoff(v func(string, ...any)) {
	checkBackoffOf(r.conns, r.plan.backoff, r.plan.maxBackoff, v)
}

// checkBackoffOf is checkBackoff for the connections of one nsqd, in the
// order they came.
func checkBackoffOf(conns []*simConn, backoff, maxBackoff time.Duration, v func(string, ...any)) {
	n := 0
	for i, sc := range conns {
		if i > 0 && n > 0 {
			prev := conns[i-1]
			d := backoff
			for k := 1; k < n && d < maxBackoff; k++ {
				d *= 2
			}
			d = min(d, maxBackoff)
			if gap := sc.acceptAt.Sub(prev.endAt); prev.ended && gap < d/2 {
				v("conn#%d came %s after conn#%d ended, the %d-th failure in a row: want at least %s (backoff %s to %s)",
					sc.id, gap, prev.id, n, d/2, backoff, maxBackoff)
			}
		}
		failed := !sc.handshakeDone || (!sc.answered && sc.endAt.Sub(sc.acceptAt) < backoff)
		if failed {
			n++
		} else {
			n = 0
		}
	}
}

// containsRun reports whether run occurs in msgs as consecutive elements.
func containsRun(msgs, run []string) bool {
	for i := 0; i+len(run) <= len(msgs); i++ {
		if slices.Equal(msgs[i:i+len(run)], run) {
			return true
		}
	}
	return false
}
