package nsq

import (
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
)

// go-nsq returns ErrIdentify and ErrProtocol as values; they classify
// themselves, so the helpers hand them back unwrapped.
func TestErrorValuesClassify(t *testing.T) {
	ident := ErrIdentify{Reason: "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid"}
	assert.True(t, errors.Is(ident, ErrNeverSent))
	assert.True(t, errors.Is(ident, ErrNotConnected))
	assert.False(t, errors.Is(ident, ErrUnknownOutcome))
	assert.Equal(t, error(ident), neverSent(ident), "returned as the value")
	_, isIdentify := neverSent(ident).(ErrIdentify)
	assert.True(t, isIdentify, "err.(ErrIdentify) holds, as go-nsq's TestProducerHeartbeat asserts")

	mpub := ErrProtocol{Reason: "E_MPUB_FAILED MPUB failed disk full"}
	assert.True(t, errors.Is(mpub, ErrUnknownOutcome))
	assert.True(t, errors.Is(mpub, ErrNotConnected))
	assert.False(t, errors.Is(mpub, ErrNeverSent))
	assert.Equal(t, error(mpub), unknownOutcome(mpub))

	refused := ErrProtocol{Reason: "E_BAD_MESSAGE PUB message too big 2000 > 1024"}
	for _, class := range []error{ErrNeverSent, ErrUnknownOutcome, ErrNotConnected} {
		assert.False(t, errors.Is(refused, class), "a refusal is not %v", class)
	}
	assert.Equal(t, refused, ErrProtocol{Reason: "E_BAD_MESSAGE PUB message too big 2000 > 1024"}, "comparable")

	// A cause that does not classify itself, or does so otherwise, is wrapped.
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	wrapped := neverSent(dial)
	assert.ErrorIs(t, wrapped, ErrNeverSent)
	var opErr *net.OpError
	assert.ErrorAs(t, wrapped, &opErr)
	assert.Equal(t, "not connected: never sent to nsqd: dial tcp: connection refused", wrapped.Error())
	assert.NotEqual(t, error(ident), unknownOutcome(ident), "an IDENTIFY failure is never an unknown outcome")
	assert.ErrorIs(t, unknownOutcome(ident), ErrUnknownOutcome)
	assert.NotEqual(t, error(refused), neverSent(refused))
	assert.ErrorIs(t, neverSent(refused), ErrNeverSent)
	assert.ErrorIs(t, neverSent(fmt.Errorf("x: %w", ident)), ErrNeverSent)
}
