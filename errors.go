package nsq

import (
	"errors"
	"strings"
)

// ErrNotConnected is returned when a publish could not be completed because
// there was no usable connection to nsqd. The finer-grained [ErrNeverSent]
// and [ErrUnknownOutcome] both satisfy errors.Is(err, ErrNotConnected), so
// code written for go-nsq keeps working.
var ErrNotConnected = errors.New("not connected")

// ErrStopped is returned, exactly, by every call made after [Producer.Stop].
var ErrStopped = errors.New("stopped")

// ErrClosing is returned by [Conn.WriteCommand] and [Conn.Flush] once the
// connection is closing.
var ErrClosing = errors.New("closing")

// ErrAlreadyConnected is returned by [Conn.Connect] when it is called twice.
var ErrAlreadyConnected = errors.New("already connected")

// ErrNeverSent classifies a publish that failed before any of its bytes were
// written to nsqd: nsqd cannot have stored it, so it is safe to publish again.
// A connection that could not be made, or that died before the command was
// handed to the socket, gives this error. errors.Is(err, ErrNotConnected)
// holds for it.
var ErrNeverSent error = &connError{text: "not connected: never sent to nsqd"}

// ErrUnknownOutcome classifies a publish whose command was (or may have been)
// written to nsqd when the connection died before nsqd answered: nsqd may or
// may not have stored it. Publishing it again may store it twice.
// errors.Is(err, ErrNotConnected) holds for it.
var ErrUnknownOutcome error = &connError{text: "not connected: connection lost before nsqd answered, outcome unknown"}

// ErrPendingFull is returned by [Producer.TryPublishAsync] when
// Config.MaxPending publishes (or Config.MaxPendingBytes) are already
// waiting for their answers.
var ErrPendingFull = errors.New("nsq: too many publishes pending (max_pending / max_pending_bytes)")

// ErrInvalidTopic is wrapped by the error a publish returns, at the call, for
// a topic name nsqd would reject or misread (see [IsValidTopicName]).
var ErrInvalidTopic = errors.New("nsq: invalid topic name")

// ErrEmptyBody is wrapped by the error a publish returns, at the call, for a
// nil or empty message body (nsqd rejects it and closes the connection), or
// for a MultiPublish with no bodies.
var ErrEmptyBody = errors.New("nsq: empty message body")

// ErrTooLarge is wrapped by the error a publish returns, at the call, when a
// message is larger than Config.MaxMsgSize or an MPUB body larger than
// Config.MaxBodySize, or either is 4 GiB or more (the protocol's 4-byte
// size cannot say it).
var ErrTooLarge = errors.New("nsq: message too large")

// ErrInvalidDelay is wrapped by the error DeferredPublish returns, at the
// call, for a negative delay or one above Config.MaxDeferredDelay.
var ErrInvalidDelay = errors.New("nsq: invalid deferred publish delay")

// ErrIdentify is returned, as a value (as go-nsq returns it), when the
// IDENTIFY step of the handshake fails: nsqd refused it (Reason holds nsqd's
// text, for example "E_BAD_BODY IDENTIFY heartbeat interval (100) is
// invalid"), the connection broke during it, or nsqd's answer could not be
// read. A publish that fails with it was never sent: errors.Is(err,
// ErrNeverSent) and errors.Is(err, ErrNotConnected) hold.
type ErrIdentify struct {
	Reason string
}

// Error returns "failed to IDENTIFY - " followed by the reason.
func (e ErrIdentify) Error() string {
	return "failed to IDENTIFY - " + e.Reason
}

// Is reports whether target is ErrNeverSent or ErrNotConnected: no publish
// is written before IDENTIFY succeeds.
func (e ErrIdentify) Is(target error) bool {
	return target == ErrNeverSent || target == ErrNotConnected
}

// ErrProtocol is an error frame from nsqd: Reason is its text,
// "<CODE> <description>", for example "E_BAD_TOPIC PUB topic name "x y" is not valid".
// A publish nsqd refused fails with it, as a value (as go-nsq returns it).
//
// Most codes mean nsqd refused the command and stored nothing: such an
// ErrProtocol is neither [ErrNeverSent] nor [ErrUnknownOutcome]. The
// exception is E_MPUB_FAILED: nsqd stores an MPUB's messages one by one and
// may have stored some before failing, so errors.Is(err, ErrUnknownOutcome)
// (and ErrNotConnected, as for every unknown outcome) holds for it.
type ErrProtocol struct {
	Reason string
}

// Is reports whether target is a class this error belongs to, from its
// code: ErrUnknownOutcome and ErrNotConnected for E_MPUB_FAILED, nothing
// for the other codes.
func (e ErrProtocol) Is(target error) bool {
	if e.Code() == "E_MPUB_FAILED" {
		return target == ErrUnknownOutcome || target == ErrNotConnected
	}
	return false
}

// Error returns the reason unchanged.
func (e ErrProtocol) Error() string {
	return e.Reason
}

// Code returns the error code nsqd sent, the first word of Reason
// ("E_BAD_MESSAGE"), or "" when there is none.
func (e ErrProtocol) Code() string {
	code, _, _ := strings.Cut(e.Reason, " ")
	return code
}

// connError is the type of ErrNeverSent and ErrUnknownOutcome: a sentinel that
// also matches ErrNotConnected.
type connError struct{ text string }

func (e *connError) Error() string { return e.text }

func (e *connError) Is(target error) bool { return target == ErrNotConnected }

// outcomeError is what a transaction fails with when its connection failed:
// class is ErrNeverSent or ErrUnknownOutcome, cause is what happened.
type outcomeError struct {
	class error
	cause error
}

func (e *outcomeError) Error() string {
	if e.cause == nil {
		return e.class.Error()
	}
	return e.class.Error() + ": " + e.cause.Error()
}

func (e *outcomeError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.class}
	}
	return []error{e.class, e.cause}
}

// neverSent classifies cause as never sent. An error that classifies itself
// as such (an ErrIdentify) is returned as it is, so that callers get the
// value go-nsq returned; anything else is wrapped.
func neverSent(cause error) error { return classify(ErrNeverSent, cause) }

// unknownOutcome classifies cause as an unknown outcome, returning an error
// that classifies itself as such (an E_MPUB_FAILED ErrProtocol) as it is.
func unknownOutcome(cause error) error { return classify(ErrUnknownOutcome, cause) }

func classify(class, cause error) error {
	if c, ok := cause.(interface{ Is(error) bool }); ok && c.Is(class) {
		return cause
	}
	return &outcomeError{class: class, cause: cause}
}
