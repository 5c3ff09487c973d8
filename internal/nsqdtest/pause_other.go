//go:build !unix

package nsqdtest

import (
	"errors"
	"os"
)

// Pause is not supported on this system: it needs SIGSTOP.
func (n *Nsqd) Pause() error { return errors.New("nsqdtest: Pause needs SIGSTOP (unix)") }

// Resume is not supported on this system: it needs SIGCONT.
func (n *Nsqd) Resume() error { return errors.New("nsqdtest: Resume needs SIGCONT (unix)") }

func resume(*os.Process) {}
