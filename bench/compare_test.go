package bench

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	nsq "github.com/nsqkit/go-nsq"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
)

var (
	flagRounds = flag.Int("rounds", 5, "TestCompare: `rounds`; each runs every scenario once per library")
	flagMsgs   = flag.Int("msgs", 0, "TestCompare: messages per run for every scenario (0: each scenario's default, "+defaultMsgs()+")")
	flagOut    = flag.String("out", "", "TestCompare: also write the report as Markdown to this `file`")
)

// shortMsgs is the messages per run in -short mode.
const shortMsgs = 300

// rawScenario is a run of the raw pipelined socket (raw_test.go).
type rawScenario struct {
	name   string
	perCmd int // messages per command: 1 for PUB
	msgs   int // default messages per run
}

var (
	rawPUB       = rawScenario{name: "raw PUB", perCmd: 1, msgs: 500_000}
	rawMPUB      = rawScenario{name: "raw MPUB 100", perCmd: mpubSize, msgs: 2_000_000}
	rawScenarios = []rawScenario{rawPUB, rawMPUB}
)

func defaultMsgs() string {
	var s []string
	for _, sc := range scenarios {
		s = append(s, fmt.Sprintf("%s: %d", sc.name, sc.msgs))
	}
	for _, r := range rawScenarios {
		s = append(s, fmt.Sprintf("%s: %d", r.name, r.msgs))
	}
	return strings.Join(s, "; ")
}

// sample is one measured run, per message.
type sample struct {
	msgsPerSec float64 // wall clock
	allocs     float64 // heap allocations (runtime.MemStats.Mallocs)
	bytes      float64 // heap bytes allocated (runtime.MemStats.TotalAlloc)
	cpuMicros  float64 // this process's user+sys CPU time; nsqd is another process
	batch      float64 // nsqkit only: Stats().MeanBatchSize over the run
}

// measure runs run, which publishes n messages, and returns its cost.
func measure(n int, run func() error) (sample, error) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	cpu0 := cpuTime()
	start := time.Now()

	err := run()

	wall := time.Since(start)
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&m1)
	return sample{
		msgsPerSec: float64(n) / wall.Seconds(),
		allocs:     float64(m1.Mallocs-m0.Mallocs) / float64(n),
		bytes:      float64(m1.TotalAlloc-m0.TotalAlloc) / float64(n),
		cpuMicros:  float64(cpu.Nanoseconds()) / 1e3 / float64(n),
	}, err
}

// cpuTime returns the user+sys CPU time used by this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runLibrary measures one run of sc with a fresh, connected producer of lib.
func runLibrary(t *testing.T, d *nsqdtest.Nsqd, lib library, sc scenario, n int) (sample, bool) {
	t.Helper()
	p := connect(t, lib, d)
	before := messageCount(t, d)
	stats := func() nsq.ProducerStats { return nsq.ProducerStats{} }
	if kit, ok := p.(nsqkitProducer); ok {
		stats = kit.Stats
	}
	st0 := stats()
	s, err := measure(n, func() error { return sc.run(p, n) })
	st1 := stats()
	if batches := st1.Batches - st0.Batches; batches > 0 {
		s.batch = float64(st1.BatchedMessages-st0.BatchedMessages) / float64(batches)
	}
	p.Stop()
	checkPublished(t, d, sc.name+" "+lib.label, before, n)
	if err != nil {
		t.Errorf("%s %s: %v", sc.name, lib.label, err)
		return s, false
	}
	return s, true
}

// runRaw measures one run of the raw pipelined socket.
func runRaw(t *testing.T, d *nsqdtest.Nsqd, r rawScenario, n int) (sample, bool) {
	t.Helper()
	c, err := dialRaw(d.TCPAddr())
	if err != nil {
		t.Fatal(err)
	}
	before := messageCount(t, d)
	s, err := measure(n, func() error { return c.publish(topic, body, n, r.perCmd) })
	c.Close()
	checkPublished(t, d, r.name, before, n)
	if err != nil {
		t.Errorf("%s: %v", r.name, err)
		return s, false
	}
	return s, true
}

// TestCompare runs every scenario for both libraries, round after round,
// alternating which library goes first (nsqkit, go-nsq | go-nsq, nsqkit |
// ...), then the raw ceilings, and prints the medians over rounds. With
// -short it runs one round of a few hundred messages per scenario, to check
// that everything works.
func TestCompare(t *testing.T) {
	rounds := *flagRounds
	msgs := func(def int) int {
		switch {
		case testing.Short():
			return shortMsgs
		case *flagMsgs > 0:
			return *flagMsgs
		}
		return def
	}
	if testing.Short() {
		rounds = 1
	}

	d := startNsqd(t)
	samples := map[string][]sample{} // by key(scenario, library)
	start := time.Now()
	for round := 1; round <= rounds; round++ {
		libs := slices.Clone(libraries)
		if round%2 == 0 {
			slices.Reverse(libs)
		}
		for _, sc := range scenarios {
			for _, lib := range libs {
				s, ok := runLibrary(t, d, lib, sc, msgs(sc.msgs))
				if ok {
					samples[key(sc.name, lib.label)] = append(samples[key(sc.name, lib.label)], s)
				}
				t.Logf("round %d/%d  %-22s %-6s %s", round, rounds, sc.name, lib.label, s)
			}
		}
		for _, r := range rawScenarios {
			s, ok := runRaw(t, d, r, msgs(r.msgs))
			if ok {
				samples[key(r.name, "")] = append(samples[key(r.name, "")], s)
			}
			t.Logf("round %d/%d  %-29s %s", round, rounds, r.name, s)
		}
	}
	t.Logf("%d rounds in %v", rounds, time.Since(start).Round(time.Second))

	report := formatReport(nsqdVersion(t, d), rounds, msgs, samples)
	fmt.Print("\n" + report)
	if *flagOut != "" {
		if err := os.WriteFile(*flagOut, []byte(report), 0o644); err != nil {
			t.Error(err)
		}
	}
}

func key(scenario, lib string) string { return scenario + "|" + lib }

func (s sample) String() string {
	return fmt.Sprintf("%9.0f msgs/s %6.2f allocs/msg %5.0f B/msg %6.2f µs CPU/msg", s.msgsPerSec, s.allocs, s.bytes, s.cpuMicros)
}

// nsqdVersion asks nsqd for its version (GET /info).
func nsqdVersion(t *testing.T, d *nsqdtest.Nsqd) string {
	resp, err := http.Get("http://" + d.HTTPAddr() + "/info")
	if err != nil {
		t.Error(err)
		return "?"
	}
	defer resp.Body.Close()
	var info struct{ Version string }
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Error(err)
		return "?"
	}
	return info.Version
}

// medians returns, field by field, the medians of samples (NaN if there
// are none).
func medians(samples []sample) sample {
	median := func(f func(sample) float64) float64 {
		if len(samples) == 0 {
			return math.NaN()
		}
		v := make([]float64, len(samples))
		for i, s := range samples {
			v[i] = f(s)
		}
		slices.Sort(v)
		return (v[(len(v)-1)/2] + v[len(v)/2]) / 2
	}
	return sample{
		msgsPerSec: median(func(s sample) float64 { return s.msgsPerSec }),
		allocs:     median(func(s sample) float64 { return s.allocs }),
		bytes:      median(func(s sample) float64 { return s.bytes }),
		cpuMicros:  median(func(s sample) float64 { return s.cpuMicros }),
		batch:      median(func(s sample) float64 { return s.batch }),
	}
}

// formatReport renders the medians as Markdown.
func formatReport(nsqd string, rounds int, msgs func(int) int, samples map[string][]sample) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Producer benchmark: nsqkit vs go-nsq v1.1.0\n\n")
	fmt.Fprintf(&b, "%s · %s/%s · %d CPUs (GOMAXPROCS %d) · %s · nsqd %s · %d-byte bodies · median of %d rounds\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), nsqd, bodySize, rounds)

	kit, gon := libraries[0].label, libraries[1].label
	rows := [][]string{{"scenario", "msgs/run",
		kit + " msgs/s", gon + " msgs/s", kit + "/" + gon,
		kit + " allocs/msg", gon + " allocs/msg",
		kit + " B/msg", gon + " B/msg",
		kit + " CPU µs/msg", gon + " CPU µs/msg"}}
	for _, sc := range scenarios {
		k, g := medians(samples[key(sc.name, kit)]), medians(samples[key(sc.name, gon)])
		rows = append(rows, []string{sc.name, fmt.Sprint(msgs(sc.msgs)),
			num(k.msgsPerSec, 0), num(g.msgsPerSec, 0), num(k.msgsPerSec/g.msgsPerSec, 2) + "×",
			num(k.allocs, 2), num(g.allocs, 2),
			num(k.bytes, 0), num(g.bytes, 0),
			num(k.cpuMicros, 2), num(g.cpuMicros, 2)})
	}
	writeTable(&b, rows)

	fmt.Fprintf(&b, "\nCeilings: a hand-written pipelined socket, no library (%d messages per write):\n\n", rawChunk)
	rows = [][]string{{"ceiling", "msgs/run", "msgs/s", "allocs/msg", "B/msg", "CPU µs/msg"}}
	for _, r := range rawScenarios {
		m := medians(samples[key(r.name, "")])
		rows = append(rows, []string{r.name, fmt.Sprint(msgs(r.msgs)),
			num(m.msgsPerSec, 0), num(m.allocs, 2), num(m.bytes, 0), num(m.cpuMicros, 2)})
	}
	writeTable(&b, rows)

	pct := func(sc scenario, raw rawScenario) string {
		return num(100*medians(samples[key(sc.name, kit)]).msgsPerSec/medians(samples[key(raw.name, "")]).msgsPerSec, 0) + "%"
	}
	fmt.Fprintf(&b, "\n%s %s reaches %s of the %s ceiling; %s %s reaches %s of the %s ceiling.\n",
		kit, scMultiAsync.name, pct(scMultiAsync, rawMPUB), rawMPUB.name,
		kit, scPublishAsync.name, pct(scPublishAsync, rawPUB), rawPUB.name)

	fmt.Fprintf(&b, "\n%s automatic batching, Stats().MeanBatchSize (median messages per MPUB):\n\n", kit)
	for _, sc := range []scenario{scPublish64, scPublishAsync} {
		fmt.Fprintf(&b, "- %s: %s\n", sc.name, num(medians(samples[key(sc.name, kit)]).batch, 1))
	}
	return b.String()
}

// num formats v with prec decimals, "–" for NaN or ±Inf (a missing run).
func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// writeTable writes rows (the first is the header) as a Markdown table with
// padded columns, the first left-aligned and the others right-aligned.
func writeTable(b *strings.Builder, rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			width[i] = max(width[i], len([]rune(cell)), 3)
		}
	}
	line := func(cells []string) {
		for i, cell := range cells {
			pad := strings.Repeat(" ", width[i]-len([]rune(cell)))
			if i == 0 {
				fmt.Fprintf(b, "| %s%s ", cell, pad)
			} else {
				fmt.Fprintf(b, "| %s%s ", pad, cell)
			}
		}
		b.WriteString("|\n")
	}
	line(rows[0])
	sep := make([]string, len(width))
	for i, w := range width {
		if i == 0 {
			sep[i] = strings.Repeat("-", w)
		} else {
			sep[i] = strings.Repeat("-", w-1) + ":"
		}
	}
	line(sep)
	for _, row := range rows[1:] {
		line(row)
	}
}
