package bench

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nsqkit/go-nsq/internal/nsqdtest"
)

var (
	flagRounds  = flag.Int("rounds", 7, "TestCompare: `rounds`; each runs every client of every scenario once, in rotated order")
	flagRunTime = flag.Duration("runtime", time.Second, "TestCompare: how long each run publishes")
	flagBatch   = flag.Int("rawbatch", 0, "TestCompare: messages per MPUB of the raw client beside PublishAsync (0: nsqkit's mean batch size in a calibration run)")
	flagOut     = flag.String("out", "", "TestCompare: also write the report as Markdown to this `file`")
	flagOnly    = flag.String("scenario", "", "TestCompare: run only the scenarios whose name matches this `regexp`")
	flagReadme  = flag.String("readme", "", "TestCompare: replace the report between the bench markers of this `file` (../README.md)")
)

// shortRunTime is the length of a run with -short, for CI: it checks that
// every client works and nsqd counts exactly what each published.
const shortRunTime = 20 * time.Millisecond

// sample is one measured run, per message.
type sample struct {
	msgs       int
	msgsPerSec float64 // wall clock
	allocs     float64 // heap allocations (runtime.MemStats.Mallocs)
	bytes      float64 // heap bytes allocated (runtime.MemStats.TotalAlloc)
	cpuMicros  float64 // this process's user+sys CPU time
	nsqdMicros float64 // nsqd's user+sys CPU time (NaN if unknown)
	batch      float64 // nsqkit only: Stats().MeanBatchSize over the run
	p50, p99   float64 // sync only: latency of one call, µs
}

// measure runs run, which publishes some messages and returns how many,
// and returns its cost per message.
func measure(nsqd nsqdProcs, run func() (int, error)) (sample, error) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	nsqd0, nsqdOK0 := nsqd.cpu()
	cpu0 := cpuTime()
	start := time.Now()

	n, err := run()

	wall := time.Since(start)
	cpu := cpuTime() - cpu0
	nsqd1, nsqdOK1 := nsqd.cpu()
	runtime.ReadMemStats(&m1)
	per := func(v float64) float64 { return v / float64(max(n, 1)) }
	s := sample{
		msgs:       n,
		msgsPerSec: float64(n) / wall.Seconds(),
		allocs:     per(float64(m1.Mallocs - m0.Mallocs)),
		bytes:      per(float64(m1.TotalAlloc - m0.TotalAlloc)),
		cpuMicros:  per(float64(cpu.Nanoseconds()) / 1e3),
		nsqdMicros: math.NaN(),
		batch:      math.NaN(),
		p50:        math.NaN(),
		p99:        math.NaN(),
	}
	if nsqdOK0 && nsqdOK1 {
		s.nsqdMicros = per(float64((nsqd1 - nsqd0).Nanoseconds()) / 1e3)
	}
	return s, err
}

// contender is one client of a scenario: a library (a Producer or a pool)
// or a raw client.
type contender struct {
	name string
	lib  *library // nil for a raw client
	raw  rawClient
}

// pool reports whether c is one of nsqkit's ProducerPools.
func (c contender) pool() bool {
	return c.lib != nil && slices.ContainsFunc(pools, func(l library) bool { return l.name == c.name })
}

// nodes returns how many nsqd c publishes to.
func (c contender) nodes() int {
	if c.lib == nil {
		return 1
	}
	return c.lib.nodes
}

// contenders returns sc's clients: the libraries, the pools if sc has
// them, then its raw clients.
func (sc scenario) contenders() []contender {
	var cs []contender
	for i := range libraries {
		cs = append(cs, contender{name: libraries[i].name, lib: &libraries[i]})
	}
	if sc.pools {
		for i := range pools {
			cs = append(cs, contender{name: pools[i].name, lib: &pools[i]})
		}
	}
	for _, rc := range sc.raw {
		cs = append(cs, contender{name: rc.name, raw: rc})
	}
	return cs
}

// comparison is the state of one TestCompare.
type comparison struct {
	t *testing.T
	// ds are the nsqd, the main one first; procs are their processes.
	ds      []*nsqdtest.Nsqd
	procs   nsqdProcs
	runTime time.Duration
}

// run measures one run of c in sc, with a fresh connection.
func (cmp *comparison) run(sc scenario, c contender) (sample, bool) {
	t := cmp.t
	lat := newLatencies(sc.goroutines())
	var (
		s      sample
		err    error
		before int64
	)
	ds, procs := cmp.ds[:c.nodes()], cmp.procs[:c.nodes()]
	if c.lib != nil {
		p := connect(t, *c.lib, ds)
		batches := func() (uint64, uint64) { return 0, 0 }
		if kit, ok := p.(nsqkitProducer); ok {
			batches = kit.batches
		}
		b0, m0 := batches()
		before = messageCount(t, ds...)
		s, err = measure(procs, func() (int, error) {
			return sc.run(p, budget{deadline: time.Now().Add(cmp.runTime)}, lat)
		})
		b1, m1 := batches()
		if b1 > b0 {
			s.batch = float64(m1-m0) / float64(b1-b0)
		}
		p.Stop()
	} else {
		rc := dialWarm(t, ds[0])
		before = messageCount(t, ds...)
		s, err = measure(procs, func() (int, error) {
			return c.raw.run(rc, budget{deadline: time.Now().Add(cmp.runTime)}, lat.of(0))
		})
		rc.Close()
	}
	if sc.sync {
		h := lat.merged()
		s.p50 = float64(h.quantile(0.50).Nanoseconds()) / 1e3
		s.p99 = float64(h.quantile(0.99).Nanoseconds()) / 1e3
	}
	checkPublished(t, sc.name+" "+c.name, before, s.msgs, ds...)
	if err != nil {
		t.Errorf("%s %s: %v", sc.name, c.name, err)
		return s, false
	}
	return s, true
}

// TestCompare runs every client of every scenario, the raw ceilings and
// the pools included, once per round, each scenario's clients in an order
// rotated by one every round; each run publishes for -runtime. It prints
// the median and the range over rounds of every figure, and the ratios
// (nsqkit's to the other clients, each pool's to nsqkit's and go-nsq's
// Producers) paired within each round. With -short it runs one short
// round, to check that everything works.
func TestCompare(t *testing.T) { compare(t, *flagOnly) }

// compare is TestCompare for the scenarios whose name matches the regexp
// onlyExpr.
func compare(t *testing.T, onlyExpr string) {
	rounds, runTime := *flagRounds, *flagRunTime
	if testing.Short() {
		rounds, runTime = 1, shortRunTime
	}
	only, err := regexp.Compile(onlyExpr)
	if err != nil {
		t.Fatal(err)
	}
	scs := slices.DeleteFunc(slices.Clone(scenarios), func(sc scenario) bool { return !only.MatchString(sc.name) })
	// The main nsqd, and as many more as the pools need, all started the
	// same way.
	nodes := 1
	for _, sc := range scs {
		for _, c := range sc.contenders() {
			nodes = max(nodes, c.nodes())
		}
	}
	cmp := &comparison{t: t, runTime: runTime}
	for range nodes {
		d := startNsqd(t)
		cmp.ds, cmp.procs = append(cmp.ds, d), append(cmp.procs, findNsqd(cmp.procs))
	}
	load0, gc0 := loadAvg(), nsqdMem(t, cmp.ds)
	start := time.Now()

	// The raw client beside PublishAsync sends MPUBs of nsqkit's mean
	// automatic batch size, learnt from a calibration run not reported.
	batch := *flagBatch
	if batch <= 0 && only.MatchString(scPublishAsync.name) {
		s, _ := cmp.run(scPublishAsync, contender{name: nsqkit.name, lib: &nsqkit})
		batch = max(1, int(math.Round(s.batch)))
		t.Logf("calibration: nsqkit's PublishAsync batches hold %.1f messages on average", s.batch)
	}
	for i := range scs {
		if scs[i].name == scPublishAsync.name {
			scs[i].raw = append(slices.Clone(scs[i].raw), rawPipelinedMPUBOf(batch))
		}
	}

	res := results{rounds: rounds, samples: map[string][]*sample{}}
	for round := range rounds {
		for _, sc := range scs {
			cs := sc.contenders()
			for i := range cs {
				c := cs[(i+round)%len(cs)]
				s, ok := cmp.run(sc, c)
				if ok {
					res.add(sc.name, c.name, round, s)
				}
				t.Logf("round %d/%d  %-22s %-38s %s", round+1, rounds, sc.name, c.name, s)
			}
		}
	}
	t.Logf("%d rounds in %v", rounds, time.Since(start).Round(time.Second))

	env := environment{
		when:    start,
		nsqd:    nsqdVersion(t, cmp.ds[0]),
		nodes:   len(cmp.ds),
		rounds:  rounds,
		runTime: runTime,
		load:    [2]string{load0, loadAvg()},
		gc:      [2]memStats{gc0, nsqdMem(t, cmp.ds)},
		batch:   batch,
	}
	report := res.format(env, scs)
	fmt.Print("\n" + report)
	if *flagOut != "" {
		if err := os.WriteFile(*flagOut, []byte(report), 0o644); err != nil {
			t.Error(err)
		}
	}
	if *flagReadme != "" {
		if err := replaceBetweenMarkers(*flagReadme, report); err != nil {
			t.Error(err)
		}
	}
}

func (s sample) String() string {
	str := fmt.Sprintf("%9.0f msgs/s %6.2f allocs/msg %5.0f B/msg %6.2f µs CPU/msg %6.2f µs nsqd CPU/msg",
		s.msgsPerSec, s.allocs, s.bytes, s.cpuMicros, s.nsqdMicros)
	if !math.IsNaN(s.p50) {
		str += fmt.Sprintf("  p50 %.0f µs p99 %.0f µs", s.p50, s.p99)
	}
	if !math.IsNaN(s.batch) {
		str += fmt.Sprintf("  batch %.1f", s.batch)
	}
	return str
}

// memStats is what nsqd's /stats says of its memory.
type memStats struct {
	GCTotalRuns    uint32 `json:"gc_total_runs"`
	HeapInUseBytes uint64 `json:"heap_in_use_bytes"`
	GCPauseUsec99  uint64 `json:"gc_pause_usec_99"`
}

// nsqdMem returns the nsqd ds's memory statistics (GET
// /stats?include_mem=true): collections and heap summed, the highest p99
// pause.
func nsqdMem(t *testing.T, ds []*nsqdtest.Nsqd) memStats {
	var sum memStats
	for _, d := range ds {
		var st struct{ Memory memStats }
		if err := getJSON("http://"+d.HTTPAddr()+"/stats?format=json&include_mem=true&include_clients=false", &st); err != nil {
			t.Error(err)
		}
		sum.GCTotalRuns += st.Memory.GCTotalRuns
		sum.HeapInUseBytes += st.Memory.HeapInUseBytes
		sum.GCPauseUsec99 = max(sum.GCPauseUsec99, st.Memory.GCPauseUsec99)
	}
	return sum
}

// nsqdVersion asks nsqd for its version (GET /info).
func nsqdVersion(t *testing.T, d *nsqdtest.Nsqd) string {
	var info struct{ Version string }
	if err := getJSON("http://"+d.HTTPAddr()+"/info", &info); err != nil {
		t.Error(err)
		return "?"
	}
	return info.Version
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// The markers around the report in the README.
const (
	beginMarker = "<!-- TestCompare report: begin (regenerate: see bench/README.md) -->"
	endMarker   = "<!-- TestCompare report: end -->"
)

// replaceBetweenMarkers replaces what lies between beginMarker and
// endMarker in the file at path by report.
func replaceBetweenMarkers(path, report string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	before, rest, ok1 := strings.Cut(s, beginMarker)
	_, after, ok2 := strings.Cut(rest, endMarker)
	if !ok1 || !ok2 {
		return errors.New(path + ": the TestCompare report markers are missing")
	}
	return os.WriteFile(path, []byte(before+beginMarker+"\n\n"+report+"\n"+endMarker+after), 0o644)
}
