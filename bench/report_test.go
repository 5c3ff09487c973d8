package bench

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// results holds TestCompare's samples.
type results struct {
	rounds int
	// samples by key(scenario, client), indexed by round; nil where the
	// run failed.
	samples map[string][]*sample
}

func key(scenario, client string) string { return scenario + "|" + client }

func (r *results) add(scenario, client string, round int, s sample) {
	k := key(scenario, client)
	if r.samples[k] == nil {
		r.samples[k] = make([]*sample, r.rounds)
	}
	r.samples[k][round] = &s
}

// spread is the median, minimum and maximum of some values.
type spread struct{ med, lo, hi float64 }

// spreadOf returns the spread of the values that are not NaN (all NaN if
// there are none).
func spreadOf(v []float64) spread {
	v = slices.DeleteFunc(slices.Clone(v), math.IsNaN)
	if len(v) == 0 {
		return spread{math.NaN(), math.NaN(), math.NaN()}
	}
	slices.Sort(v)
	return spread{med: (v[(len(v)-1)/2] + v[len(v)/2]) / 2, lo: v[0], hi: v[len(v)-1]}
}

// field returns the spread over rounds of f for one client of a scenario.
func (r *results) field(scenario, client string, f func(*sample) float64) spread {
	var v []float64
	for _, s := range r.samples[key(scenario, client)] {
		if s != nil {
			v = append(v, f(s))
		}
	}
	return spreadOf(v)
}

// ratio returns the spread over rounds of f(a)/f(b), each round's a and b
// run back to back in the same round.
func (r *results) ratio(scenario, a, b string, f func(*sample) float64) spread {
	sa, sb := r.samples[key(scenario, a)], r.samples[key(scenario, b)]
	var v []float64
	for i := range r.rounds {
		if i < len(sa) && i < len(sb) && sa[i] != nil && sb[i] != nil {
			v = append(v, f(sa[i])/f(sb[i]))
		}
	}
	return spreadOf(v)
}

func msgsPerSec(s *sample) float64 { return s.msgsPerSec }
func cpuMicros(s *sample) float64  { return s.cpuMicros }

// environment is what the report says about the run.
type environment struct {
	when    time.Time
	nsqd    string
	nodes   int // how many nsqd ran (the pools' nodes)
	rounds  int
	runTime time.Duration
	load    [2]string   // 1-minute load average before and after
	gc      [2]memStats // nsqd's, before and after
	batch   int         // the raw client's MPUB size beside PublishAsync
}

// format renders the results as Markdown.
func (r *results) format(env environment, scs []scenario) string {
	var b strings.Builder
	cpu := cpuModel()
	if cpu != "" {
		cpu = " (" + cpu + ")"
	}
	fmt.Fprintf(&b, "%s · %s/%s · %d CPUs%s · GOMAXPROCS %d · %s · nsqd %s · %d-byte bodies · %d rounds of %v runs · load average %s before, %s after\n\n",
		env.when.UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), cpu, runtime.GOMAXPROCS(0), runtime.Version(), env.nsqd, bodySize,
		env.rounds, env.runTime, env.load[0], env.load[1])
	if *nsqkitOptions != "" {
		fmt.Fprintf(&b, "nsqkit's Config is not the default: %s\n\n", *nsqkitOptions)
	}

	b.WriteString("Median over rounds, with the lowest and highest round. CPU is per message: the client's (this process) and nsqd's (another process). Latency is of one sync call.\n\n")
	rows := [][]string{{"scenario", "client", "msgs/s", "msgs/s min–max",
		"client CPU µs/msg", "min–max", "nsqd CPU µs/msg", "allocs/msg", "B/msg", "p50 µs", "p99 µs"}}
	for _, sc := range scs {
		for i, c := range sc.contenders() {
			f := func(g func(*sample) float64) spread { return r.field(sc.name, c.name, g) }
			rate, cpu := f(msgsPerSec), f(cpuMicros)
			name := sc.name
			if i > 0 {
				name = ""
			}
			rows = append(rows, []string{name, c.name,
				count(rate.med), count(rate.lo) + "–" + count(rate.hi),
				num(cpu.med, 2), num(cpu.lo, 2) + "–" + num(cpu.hi, 2),
				num(f(func(s *sample) float64 { return s.nsqdMicros }).med, 2),
				num(f(func(s *sample) float64 { return s.allocs }).med, 2),
				num(f(func(s *sample) float64 { return s.bytes }).med, 0),
				num(f(func(s *sample) float64 { return s.p50 }).med, 0),
				num(f(func(s *sample) float64 { return s.p99 }).med, 0)})
		}
	}
	writeTable(&b, rows)

	kit := nsqkit.name
	b.WriteString("\nnsqkit ÷ each other client, and each nsqkit pool ÷ nsqkit's and go-nsq's Producers, computed within each round (the two ran back to back), then the median and range over rounds:\n\n")
	rows = [][]string{{"scenario", "ratio", "msgs/s", "min–max", "client CPU/msg", "min–max"}}
	for _, sc := range scs {
		// nsqkit ÷ the others first, then the pools.
		var pairs, poolPairs [][2]string
		for _, c := range sc.contenders() {
			switch {
			case c.pool():
				poolPairs = append(poolPairs, [2]string{c.name, kit}, [2]string{c.name, gonsqLib.name})
			case c.name != kit:
				pairs = append(pairs, [2]string{kit, c.name})
			}
		}
		for i, p := range append(pairs, poolPairs...) {
			rate, cpu := r.ratio(sc.name, p[0], p[1], msgsPerSec), r.ratio(sc.name, p[0], p[1], cpuMicros)
			name := sc.name
			if i > 0 {
				name = ""
			}
			rows = append(rows, []string{name, p[0] + " ÷ " + p[1],
				num(rate.med, 2) + "×", num(rate.lo, 2) + "–" + num(rate.hi, 2),
				num(cpu.med, 2) + "×", num(cpu.lo, 2) + "–" + num(cpu.hi, 2)})
		}
	}
	writeTable(&b, rows)

	b.WriteString("\n")
	var more []string
	for _, sc := range scs {
		k, g := r.field(sc.name, kit, cpuMicros), r.field(sc.name, gonsqLib.name, cpuMicros)
		if k.med > g.med {
			more = append(more, fmt.Sprintf("%s (%s vs %s µs, median)", sc.name, num(k.med, 2), num(g.med, 2)))
		}
	}
	if len(more) == 0 {
		b.WriteString("- nsqkit uses less client CPU per message than go-nsq in every scenario (medians).\n")
	} else {
		fmt.Fprintf(&b, "- nsqkit uses more client CPU per message than go-nsq in: %s.\n", strings.Join(more, "; "))
	}
	var batches []string
	for _, sc := range scs {
		if m := r.field(sc.name, kit, func(s *sample) float64 { return s.batch }); !math.IsNaN(m.med) {
			batches = append(batches, fmt.Sprintf("%s %s (%s–%s)", sc.name, num(m.med, 1), num(m.lo, 1), num(m.hi, 1)))
		}
	}
	if len(batches) > 0 {
		fmt.Fprintf(&b, "- nsqkit's automatic MPUB batches, Stats().MeanBatchSize (median, range): %s.", strings.Join(batches, "; "))
		if env.batch > 0 {
			fmt.Fprintf(&b, " The raw client beside PublishAsync sends MPUBs of %d.", env.batch)
		}
		b.WriteString("\n")
	}
	if env.nodes > 1 {
		fmt.Fprintf(&b, "- The pool of 3 publishes to %d nsqd started the same way, the main one among them; its nsqd CPU µs/msg is theirs summed, and the other clients use the main one.\n", env.nodes)
		fmt.Fprintf(&b, "- The %d nsqd ran %d garbage collections during the whole comparison (p99 pause %d µs at most; %.0f MB heap in use at the end, summed): their GC is in nsqd CPU µs/msg.\n",
			env.nodes, env.gc[1].GCTotalRuns-env.gc[0].GCTotalRuns, env.gc[1].GCPauseUsec99, float64(env.gc[1].HeapInUseBytes)/(1<<20))
	} else {
		fmt.Fprintf(&b, "- nsqd ran %d garbage collections during the whole comparison (p99 pause %d µs; %.0f MB heap in use at the end): its GC is in nsqd CPU µs/msg.\n",
			env.gc[1].GCTotalRuns-env.gc[0].GCTotalRuns, env.gc[1].GCPauseUsec99, float64(env.gc[1].HeapInUseBytes)/(1<<20))
	}
	return b.String()
}

// num formats v with prec decimals, "–" for NaN or ±Inf (a missing value).
func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// count formats v rounded to an integer, with thousands separators.
func count(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	s := fmt.Sprintf("%.0f", v)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// writeTable writes rows (the first is the header) as a Markdown table with
// padded columns, the first two left-aligned and the others right-aligned.
func writeTable(b *strings.Builder, rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			width[i] = max(width[i], len([]rune(cell)), 3)
		}
	}
	left := func(i int) bool { return i < 2 }
	line := func(cells []string) {
		for i, cell := range cells {
			pad := strings.Repeat(" ", width[i]-len([]rune(cell)))
			if left(i) {
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
		if left(i) {
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
