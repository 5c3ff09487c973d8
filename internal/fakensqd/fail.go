package fakensqd

import (
	"fmt"
	"os"
	"runtime"
)

// failMode is how a failure ends the goroutine that met it: see the
// package documentation.
type failMode int

const (
	// failFatal: the test goroutine (Accept, Wait, a Conn from Accept):
	// t.Fatal.
	failFatal failMode = iota
	// failScript: a Go script (a Conn a script got): t.Error, then
	// runtime.Goexit, which ends the script and runs its deferred calls.
	failScript
)

// fail reports msg and ends the caller as mode says.
func (s *Server) fail(mode failMode, msg string) {
	s.t.Helper()
	if mode == failFatal {
		s.t.Fatal(msg)
		return
	}
	s.report(msg)
	runtime.Goexit()
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
