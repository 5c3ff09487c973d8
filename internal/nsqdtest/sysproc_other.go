//go:build !linux

package nsqdtest

import "os/exec"

// setSysProcAttr does nothing outside Linux.
func setSysProcAttr(cmd *exec.Cmd) {}
