//go:build linux

package nsq

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Bug 11, 4 GiB bodies: with max_msg_size and max_body_size unset, a body
// of 4 GiB or more was accepted and its length wrapped the 4-byte size on
// the wire. It is refused at the call. The bodies are address space only
// (an inaccessible mapping): nothing reads them.
func TestBodiesOf4GiBAreRefusedAtTheCall(t *testing.T) {
	const size = 1<<32 + 1
	huge, err := syscall.Mmap(-1, 0, size, syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	require.NoError(t, err)
	t.Cleanup(func() { syscall.Munmap(huge) })

	p := newTestProducer(t, "127.0.0.1:1", nil)
	done := make(chan *ProducerTransaction, 1)
	for name, err := range map[string]error{
		"Publish":              p.Publish("t", huge),
		"PublishAsync":         p.PublishAsync("t", huge, done),
		"DeferredPublish":      p.DeferredPublish("t", 0, huge),
		"MultiPublish, 1 body": p.MultiPublish("t", [][]byte{huge}),
		// Each body fits, their MPUB body does not.
		"MultiPublish, sum": p.MultiPublish("t", [][]byte{huge[:1<<31], huge[:1<<31]}),
	} {
		assert.ErrorIs(t, err, ErrTooLarge, name)
	}
	assert.Zero(t, p.Stats().ConnectFailures, "nothing was accepted")
}
