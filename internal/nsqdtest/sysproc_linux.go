package nsqdtest

import (
	"os/exec"
	"syscall"
)

// setSysProcAttr asks the kernel to kill nsqd if the test process dies
// without running its cleanups (e.g. on a go test -timeout panic), so no
// nsqd is left behind.
func setSysProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
