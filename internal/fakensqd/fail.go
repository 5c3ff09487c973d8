package fakensqd

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
)

// fail reports msg following the failure rule of the package documentation:
// t.Fatal on the test goroutine, t.Error then runtime.Goexit on a Go script
// goroutine, t.Error and return on any other goroutine.
func (s *Server) fail(msg string) {
	s.t.Helper()
	g := goid()
	if g == s.owner {
		s.t.Fatal(msg)
		return
	}
	s.mu.Lock()
	inScript := false
	for _, sc := range s.scripts {
		if sc.gid == g {
			inScript = true
			break
		}
	}
	s.mu.Unlock()
	s.report(msg)
	if inScript {
		runtime.Goexit()
	}
}

// report marks the test failed with msg, or prints msg to standard error
// once the test's cleanup is over and the test can no longer be told.
func (s *Server) report(msg string) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		fmt.Fprintf(os.Stderr, "%s (after %s ended)\n", msg, s.t.Name())
		return
	}
	s.t.Error(msg)
}

// goid returns the id of the calling goroutine, read from the first line of
// its stack trace ("goroutine 42 [running]:"), as x/net/http2's gotrack.go
// does. It is only used to tell the test goroutine and script goroutines
// apart; it costs a few microseconds.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		b = b[:i]
	}
	id, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		panic("fakensqd: cannot parse goroutine id from " + strconv.Quote(string(buf[:])))
	}
	return id
}
