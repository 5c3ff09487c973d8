//go:build unix

package nsqdtest

import (
	"errors"
	"os"
	"syscall"
)

// Pause stops the process with SIGSTOP: its sockets stay open, but it reads,
// writes and answers nothing (as a hung or overloaded server) until Resume.
// Stop, Kill and the test's cleanup still end a paused process.
func (n *Nsqd) Pause() error {
	p := n.current()
	if p == nil {
		return errors.New("nsqdtest: Pause: not running")
	}
	return p.cmd.Process.Signal(syscall.SIGSTOP)
}

// Resume continues a process stopped by Pause (SIGCONT).
func (n *Nsqd) Resume() error {
	p := n.current()
	if p == nil {
		return errors.New("nsqdtest: Resume: not running")
	}
	return p.cmd.Process.Signal(syscall.SIGCONT)
}

func resume(proc *os.Process) { _ = proc.Signal(syscall.SIGCONT) }
