package nsq

import (
	"crypto/tls"
	"flag"
	"io"
	"log"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The drop-in surface: every function, method, type and value that code
// written for go-nsq v1.1.0's producer can touch, assigned to go-nsq's exact
// signature. A drift fails to compile.
var (
	_ func(string, *Config) (*Producer, error)                                                = NewProducer
	_ func(*Producer, string, []byte) error                                                   = (*Producer).Publish
	_ func(*Producer, string, [][]byte) error                                                 = (*Producer).MultiPublish
	_ func(*Producer, string, time.Duration, []byte) error                                    = (*Producer).DeferredPublish
	_ func(*Producer, string, []byte, chan *ProducerTransaction, ...any) error                = (*Producer).PublishAsync
	_ func(*Producer, string, [][]byte, chan *ProducerTransaction, ...any) error              = (*Producer).MultiPublishAsync
	_ func(*Producer, string, time.Duration, []byte, chan *ProducerTransaction, ...any) error = (*Producer).DeferredPublishAsync
	_ func(*Producer) error                                                                   = (*Producer).Ping
	_ func(*Producer)                                                                         = (*Producer).Stop
	_ func(*Producer) string                                                                  = (*Producer).String
	_ func(*Producer, logger, LogLevel)                                                       = (*Producer).SetLogger
	_ func(*Producer, logger, LogLevel)                                                       = (*Producer).SetLoggerForLevel
	_ func(*Producer, LogLevel)                                                               = (*Producer).SetLoggerLevel

	_ logger = (*log.Logger)(nil)

	_ func() *Config                                = NewConfig
	_ func(*Config, string, any) error              = (*Config).Set
	_ func(*Config) error                           = (*Config).Validate
	_ func(*ConfigFlag, string) error               = (*ConfigFlag).Set
	_ func(*ConfigFlag) string                      = (*ConfigFlag).String
	_ flag.Value                                    = &ConfigFlag{}
	_ BackoffStrategy                               = &ExponentialStrategy{}
	_ BackoffStrategy                               = &FullJitterStrategy{}
	_ func(BackoffStrategy, int) time.Duration      = BackoffStrategy.Calculate
	_ func(*ExponentialStrategy, int) time.Duration = (*ExponentialStrategy).Calculate

	_ func(*Command, io.Writer) (int64, error)     = (*Command).WriteTo
	_ func(*Command) string                        = (*Command).String
	_ io.WriterTo                                  = &Command{}
	_ func(string, []byte) *Command                = Publish
	_ func(string, [][]byte) (*Command, error)     = MultiPublish
	_ func(string, time.Duration, []byte) *Command = DeferredPublish
	_ func(map[string]any) (*Command, error)       = Identify
	_ func(string) (*Command, error)               = Auth
	_ func() *Command                              = Nop
	_ func(io.Reader) ([]byte, error)              = ReadResponse
	_ func([]byte) (int32, []byte, error)          = UnpackResponse
	_ func(io.Reader) (int32, []byte, error)       = ReadUnpackedResponse
	_ func(string) bool                            = IsValidTopicName
	_ func(string) bool                            = IsValidChannelName
	_ []byte                                       = MagicV1
	_ []byte                                       = MagicV2
	_ int32                                        = FrameTypeResponse
	_ int32                                        = FrameTypeError
	_ int32                                        = FrameTypeMessage

	_ error                 = ErrNotConnected
	_ error                 = ErrStopped
	_ error                 = ErrClosing
	_ error                 = ErrAlreadyConnected
	_ error                 = ErrIdentify{}
	_ error                 = ErrProtocol{}
	_ func(LogLevel) string = LogLevel.String
	_ string                = VERSION

	_ func(string, *Config, ConnDelegate) *Conn = NewConn
	_ func(*Conn) (*IdentifyResponse, error)    = (*Conn).Connect
	_ func(*Conn) error                         = (*Conn).Close
	_ func(*Conn, *Command) error               = (*Conn).WriteCommand
	_ func(*Conn) error                         = (*Conn).Flush
	_ func(*Conn) string                        = (*Conn).String
	_ func(*Conn) net.Addr                      = (*Conn).RemoteAddr
)

// The fields code sets or reads, with go-nsq's types.
var (
	_ = ProducerTransaction{Error: error(nil), Args: []any(nil)}
	_ = ErrIdentify{Reason: ""}
	_ = ErrProtocol{Reason: ""}
	_ = Command{Name: []byte(nil), Params: [][]byte(nil), Body: []byte(nil)}
	_ = IdentifyResponse{MaxRdyCount: int64(0), TLSv1: false, Deflate: false, Snappy: false, AuthRequired: false}
	_ = AuthResponse{Identity: "", IdentityUrl: "", PermissionCount: int64(0)}
	_ = ConfigFlag{Config: (*Config)(nil)}
	_ = Config{
		DialTimeout: time.Duration(0), ReadTimeout: time.Duration(0), WriteTimeout: time.Duration(0),
		LocalAddr: net.Addr(nil), LookupdPollInterval: time.Duration(0), LookupdPollJitter: float64(0),
		LookupdPollTimeout: time.Duration(0), MaxRequeueDelay: time.Duration(0), DefaultRequeueDelay: time.Duration(0),
		BackoffStrategy: BackoffStrategy(nil), MaxBackoffDuration: time.Duration(0), BackoffMultiplier: time.Duration(0),
		MaxAttempts: uint16(0), LowRdyIdleTimeout: time.Duration(0), LowRdyTimeout: time.Duration(0),
		RDYRedistributeInterval: time.Duration(0), ClientID: "", Hostname: "", UserAgent: "",
		HeartbeatInterval: time.Duration(0), SampleRate: int32(0), TlsV1: false, TlsConfig: (*tls.Config)(nil),
		Deflate: false, DeflateLevel: int(0), Snappy: false, OutputBufferSize: int64(0),
		OutputBufferTimeout: time.Duration(0), MaxInFlight: int(0), MsgTimeout: time.Duration(0),
		AuthSecret: "", LookupdAuthorization: false,
	}
)

// goNsqConnDelegate has go-nsq's ConnDelegate methods that a producer's
// connection can call; a go-nsq delegate satisfies ours.
type goNsqConnDelegate struct{}

func (goNsqConnDelegate) OnResponse(*Conn, []byte) {}
func (goNsqConnDelegate) OnError(*Conn, []byte)    {}
func (goNsqConnDelegate) OnBackoff(*Conn)          {}
func (goNsqConnDelegate) OnContinue(*Conn)         {}
func (goNsqConnDelegate) OnResume(*Conn)           {}
func (goNsqConnDelegate) OnIOError(*Conn, error)   {}
func (goNsqConnDelegate) OnHeartbeat(*Conn)        {}
func (goNsqConnDelegate) OnClose(*Conn)            {}

var _ ConnDelegate = goNsqConnDelegate{}

func TestDropInValues(t *testing.T) {
	assert.Equal(t, []byte("  V1"), MagicV1)
	assert.Equal(t, []byte("  V2"), MagicV2)
	assert.Equal(t, []int32{0, 1, 2}, []int32{FrameTypeResponse, FrameTypeError, FrameTypeMessage})
	assert.EqualValues(t, 3, LogLevelMax) // untyped, as in go-nsq
	assert.Equal(t, []LogLevel{0, 1, 2, 3}, []LogLevel{LogLevelDebug, LogLevelInfo, LogLevelWarning, LogLevelError})
	assert.Equal(t, "nsqkit-go-nsq/"+VERSION, NewConfig().UserAgent)
}
