//go:build unix

package nsqdtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
)

// Pause stops the process with SIGSTOP: its sockets stay open, but it reads,
// writes and answers nothing (as a hung or overloaded server) until Resume.
// On Linux it returns once the kernel reports the process stopped. Stop,
// Kill and the test's cleanup still end a paused process.
func (n *Nsqd) Pause() error {
	p := n.current()
	if p == nil {
		return errors.New("nsqdtest: Pause: not running")
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	return waitState(p.cmd.Process.Pid, true)
}

// Resume continues a process stopped by Pause (SIGCONT), and on Linux
// returns once the kernel reports it running again.
func (n *Nsqd) Resume() error {
	p := n.current()
	if p == nil {
		return errors.New("nsqdtest: Resume: not running")
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return err
	}
	return waitState(p.cmd.Process.Pid, false)
}

func resume(proc *os.Process) { _ = proc.Signal(syscall.SIGCONT) }

// waitState waits until /proc says the process is stopped (or not). Signals
// are delivered asynchronously and the kernel offers nothing to wait on, so
// it polls, for at most 5 seconds. Elsewhere than Linux it returns at once.
func waitState(pid int, stopped bool) error {
	if runtime.GOOS != "linux" {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return err
		}
		// The state follows the command name in parentheses: "pid (comm) S ...".
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) {
			return fmt.Errorf("nsqdtest: cannot parse /proc/%d/stat", pid)
		}
		state := stat[i+2]
		if (state == 'T' || state == 't') == stopped {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nsqdtest: process %d state %q, want stopped=%v", pid, state, stopped)
		}
		time.Sleep(time.Millisecond)
	}
}
