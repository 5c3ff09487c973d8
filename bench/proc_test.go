package bench

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nsqkit/go-nsq/internal/nsqdtest"
)

// cpuTime returns the user+sys CPU time used by this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, 100 on
// every Linux architecture Go runs on.
const userHZ = 100

// nsqdProc reads the CPU time of one nsqd child of this process from
// Linux's /proc, at 10ms resolution. Its zero value, or one where nsqd was
// not found (another OS), reports nothing.
type nsqdProc struct{ pid int }

// findNsqd returns the nsqdProc of a child process running nsqdtest's nsqd
// binary that is not one of known: called after each nsqd is started, it
// finds that one (its command line holds no address to tell them apart:
// nsqdtest passes port 0).
func findNsqd(known nsqdProcs) nsqdProc {
	bin, err := nsqdtest.Binary()
	if err != nil {
		return nsqdProc{}
	}
	bin, _ = filepath.EvalSymlinks(bin)
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, ok := procStat(pid)
		if !ok || f[1] != strconv.Itoa(self) {
			continue
		}
		if slices.Contains(known, nsqdProc{pid: pid}) {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && exe == bin {
			return nsqdProc{pid: pid}
		}
	}
	return nsqdProc{}
}

// cpu returns nsqd's user+sys CPU time so far, and false if it is unknown.
func (p nsqdProc) cpu() (time.Duration, bool) {
	if p.pid == 0 {
		return 0, false
	}
	f, ok := procStat(p.pid)
	if !ok {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * time.Second / userHZ, true
}

// nsqdProcs are the nsqd a run publishes to.
type nsqdProcs []nsqdProc

// cpu returns the nsqd's user+sys CPU time so far, summed, and false if
// any is unknown.
func (ps nsqdProcs) cpu() (time.Duration, bool) {
	var sum time.Duration
	for _, p := range ps {
		c, ok := p.cpu()
		if !ok {
			return 0, false
		}
		sum += c
	}
	return sum, len(ps) > 0
}

// procStat returns the fields of /proc/<pid>/stat after the command name:
// state, ppid, ... (see proc(5): utime is f[11], stime f[12]).
func procStat(pid int) ([]string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the name may hold spaces and parentheses
	if i < 0 {
		return nil, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return nil, false
	}
	return f, true
}

// loadAvg returns the 1-minute load average from /proc/loadavg, or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// cpuModel returns the processor's name from /proc/cpuinfo, or "".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
