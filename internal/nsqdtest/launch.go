package nsqdtest

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
)

// Launch is Start for code that has no testing.TB, such as Example
// functions and benchmarks' setup: it runs nsqd with the same defaults and
// waits for it the same way, but returns an error instead of failing a
// test, and nothing stops nsqd automatically. The data path defaults to a
// new directory made by os.MkdirTemp.
//
// The caller must call Close. If it does not, nsqd and its data path
// outlive the calling process, except on Linux, where the kernel kills nsqd
// when the process exits (Pdeathsig) but the data path stays.
//
// The returned Nsqd's methods behave as after Start, except that Restart
// panics instead of calling t.Fatal if nsqd cannot be started again.
func Launch(args ...string) (*Nsqd, error) {
	return launch(Start, args)
}

// launch runs start outside a test: a failure it reports comes back as an
// error.
func launch[T any](start func(testing.TB, ...string) T, args []string) (v T, err error) {
	lt := &launchTB{}
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		lt.close()
		f, ok := r.(launchFailure)
		if !ok {
			panic(r)
		}
		var zero T
		v, err = zero, errors.New(string(f))
	}()
	return start(lt, args...), nil
}

// Close stops nsqd (SIGTERM, then SIGKILL after 5 seconds) and removes the
// data directory Launch made. It may be called more than once. On an Nsqd
// from Start it only stops nsqd: the test's cleanup does the rest.
func (n *Nsqd) Close() {
	if lt, ok := n.t.(*launchTB); ok {
		lt.close()
		return
	}
	n.Stop()
}

// launchFailure is what launchTB's Fatal panics with; Launch turns it into
// its error.
type launchFailure string

// launchTB is the testing.TB that Launch gives Start. It implements the
// methods Start and Nsqd use: Fatal panics with a launchFailure, TempDir
// makes a directory with os.MkdirTemp, and the cleanups Start registers run
// in Close. The other methods are left to the embedded nil interface and
// would panic; TestLaunch* guard that Start uses none of them.
type launchTB struct {
	testing.TB // nil

	closeOnce sync.Once

	mu       sync.Mutex
	failed   bool
	dirs     []string
	cleanups []func()
}

func (*launchTB) Helper() {}

func (*launchTB) Name() string { return "nsqdtest.Launch" }

func (lt *launchTB) TempDir() string {
	dir, err := os.MkdirTemp("", "nsqdtest-")
	if err != nil {
		lt.Fatal("nsqdtest: ", err)
	}
	lt.mu.Lock()
	lt.dirs = append(lt.dirs, dir)
	lt.mu.Unlock()
	return dir
}

func (lt *launchTB) Cleanup(f func()) {
	lt.mu.Lock()
	lt.cleanups = append(lt.cleanups, f)
	lt.mu.Unlock()
}

func (lt *launchTB) Fail() {
	lt.mu.Lock()
	lt.failed = true
	lt.mu.Unlock()
}

func (lt *launchTB) Failed() bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return lt.failed
}

func (lt *launchTB) FailNow() { lt.Fatal("nsqdtest: FailNow") }

func (lt *launchTB) Fatal(args ...any) {
	lt.Fail()
	panic(launchFailure(fmt.Sprint(args...)))
}

func (lt *launchTB) Fatalf(format string, args ...any) {
	lt.Fail()
	panic(launchFailure(fmt.Sprintf(format, args...)))
}

func (lt *launchTB) Error(args ...any)                 { lt.Fail(); lt.Log(args...) }
func (lt *launchTB) Errorf(format string, args ...any) { lt.Fail(); lt.Logf(format, args...) }

// Log and Logf print to stderr: Start only logs the tail of nsqd's log
// when something failed.
func (*launchTB) Log(args ...any) { fmt.Fprintln(os.Stderr, args...) }

func (*launchTB) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

// close runs the registered cleanups, last first (which stops nsqd), then
// removes the temporary directories. Only the first call does anything;
// concurrent calls return once it is done.
func (lt *launchTB) close() {
	lt.closeOnce.Do(func() {
		lt.mu.Lock()
		cleanups, dirs := lt.cleanups, lt.dirs
		lt.cleanups, lt.dirs = nil, nil
		lt.mu.Unlock()
		for _, f := range slices.Backward(cleanups) {
			f()
		}
		for _, dir := range dirs {
			os.RemoveAll(dir)
		}
	})
}
