package nsq

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fieldByName returns the named field of c, failing the test if it does
// not exist.
func fieldByName(t *testing.T, c *Config, name string) reflect.Value {
	t.Helper()
	f := reflect.ValueOf(c).Elem().FieldByName(name)
	require.True(t, f.IsValid(), "Config has no field %s", name)
	return f
}

// TestConfigGoNSQFields checks that every exported field of go-nsq
// v1.1.0's Config exists with the same type and option name.
func TestConfigGoNSQFields(t *testing.T) {
	dur := reflect.TypeFor[time.Duration]()
	tests := []struct {
		field string
		typ   reflect.Type
		opt   string
	}{
		{"DialTimeout", dur, "dial_timeout"},
		{"ReadTimeout", dur, "read_timeout"},
		{"WriteTimeout", dur, "write_timeout"},
		{"LocalAddr", reflect.TypeFor[net.Addr](), "local_addr"},
		{"LookupdPollInterval", dur, "lookupd_poll_interval"},
		{"LookupdPollJitter", reflect.TypeFor[float64](), "lookupd_poll_jitter"},
		{"LookupdPollTimeout", dur, "lookupd_poll_timeout"},
		{"MaxRequeueDelay", dur, "max_requeue_delay"},
		{"DefaultRequeueDelay", dur, "default_requeue_delay"},
		{"BackoffStrategy", reflect.TypeFor[BackoffStrategy](), "backoff_strategy"},
		{"MaxBackoffDuration", dur, "max_backoff_duration"},
		{"BackoffMultiplier", dur, "backoff_multiplier"},
		{"MaxAttempts", reflect.TypeFor[uint16](), "max_attempts"},
		{"LowRdyIdleTimeout", dur, "low_rdy_idle_timeout"},
		{"LowRdyTimeout", dur, "low_rdy_timeout"},
		{"RDYRedistributeInterval", dur, "rdy_redistribute_interval"},
		{"ClientID", reflect.TypeFor[string](), "client_id"},
		{"Hostname", reflect.TypeFor[string](), "hostname"},
		{"UserAgent", reflect.TypeFor[string](), "user_agent"},
		{"HeartbeatInterval", dur, "heartbeat_interval"},
		{"SampleRate", reflect.TypeFor[int32](), "sample_rate"},
		{"TlsV1", reflect.TypeFor[bool](), "tls_v1"},
		{"TlsConfig", reflect.TypeFor[*tls.Config](), "tls_config"},
		{"Deflate", reflect.TypeFor[bool](), "deflate"},
		{"DeflateLevel", reflect.TypeFor[int](), "deflate_level"},
		{"Snappy", reflect.TypeFor[bool](), "snappy"},
		{"OutputBufferSize", reflect.TypeFor[int64](), "output_buffer_size"},
		{"OutputBufferTimeout", dur, "output_buffer_timeout"},
		{"MaxInFlight", reflect.TypeFor[int](), "max_in_flight"},
		{"MsgTimeout", dur, "msg_timeout"},
		{"AuthSecret", reflect.TypeFor[string](), "auth_secret"},
		{"LookupdAuthorization", reflect.TypeFor[bool](), "skip_lookupd_authorization"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			f, ok := reflect.TypeFor[Config]().FieldByName(tt.field)
			require.True(t, ok)
			assert.Equal(t, tt.typ, f.Type)
			assert.Equal(t, tt.opt, f.Tag.Get("opt"))
		})
	}
}

// TestConfigEveryExportedFieldIsAnOption guards new fields: each one must
// be settable by name.
func TestConfigEveryExportedFieldIsAnOption(t *testing.T) {
	typ := reflect.TypeFor[Config]()
	n := 0
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		n++
		opt := f.Tag.Get("opt")
		assert.NotEmpty(t, opt, "field %s has no opt tag", f.Name)
		assert.Contains(t, configOptions.byName, opt)
	}
	assert.Len(t, configOptions.list, n)
	assert.Equal(t, 32+13, n, "go-nsq's 32 fields plus this library's 13")
}

func TestNewConfigDefaults(t *testing.T) {
	c := NewConfig()
	tests := []struct {
		field string
		want  any
	}{
		{"DialTimeout", time.Second},
		{"ReadTimeout", 60 * time.Second},
		{"WriteTimeout", time.Second},
		{"LocalAddr", net.Addr(nil)},
		{"LookupdPollInterval", 60 * time.Second},
		{"LookupdPollJitter", 0.3},
		{"LookupdPollTimeout", time.Minute},
		{"MaxRequeueDelay", 15 * time.Minute},
		{"DefaultRequeueDelay", 90 * time.Second},
		{"BackoffStrategy", BackoffStrategy(&ExponentialStrategy{cfg: c})},
		{"MaxBackoffDuration", 2 * time.Minute},
		{"BackoffMultiplier", time.Second},
		{"MaxAttempts", uint16(5)},
		{"LowRdyIdleTimeout", 10 * time.Second},
		{"LowRdyTimeout", 30 * time.Second},
		{"RDYRedistributeInterval", 5 * time.Second},
		{"HeartbeatInterval", 30 * time.Second},
		{"SampleRate", int32(0)},
		{"TlsV1", false},
		{"TlsConfig", (*tls.Config)(nil)},
		{"Deflate", false},
		{"DeflateLevel", 6},
		{"Snappy", false},
		{"OutputBufferSize", int64(16384)},
		{"OutputBufferTimeout", 250 * time.Millisecond},
		{"MaxInFlight", 1},
		{"MsgTimeout", time.Duration(0)},
		{"AuthSecret", ""},
		{"LookupdAuthorization", true},
		{"MaxMsgSize", int64(0)},
		{"MaxBodySize", int64(0)},
		{"MaxDeferredDelay", time.Hour},
		{"MaxFrameSize", int64(33554432)},
		{"StopTimeout", 5 * time.Second},
		{"ReconnectBackoff", 50 * time.Millisecond},
		{"MaxReconnectBackoff", time.Second},
		{"AutoBatch", true},
		{"MaxBatchMessages", 512},
		{"MaxBatchBytes", 1048576},
		{"MaxPending", 65536},
		{"MaxPendingBytes", int64(268435456)},
		{"PoolMaxAttempts", 3},
		{"UserAgent", "nsqkit-go-nsq/" + VERSION},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			assert.Equal(t, tt.want, fieldByName(t, c, tt.field).Interface())
		})
	}
	t.Run("ClientID and Hostname", func(t *testing.T) {
		hostname, err := os.Hostname()
		require.NoError(t, err)
		assert.Equal(t, hostname, c.Hostname)
		short, _, _ := strings.Cut(hostname, ".")
		assert.Equal(t, short, c.ClientID)
		assert.NotContains(t, c.ClientID, ".")
	})
	t.Run("covers every option", func(t *testing.T) {
		covered := map[string]bool{"ClientID": true, "Hostname": true}
		for _, tt := range tests {
			covered[tt.field] = true
		}
		for _, o := range configOptions.list {
			assert.True(t, covered[o.field], "no default checked for %s", o.field)
		}
	})
	t.Run("Validate", func(t *testing.T) {
		assert.NoError(t, c.Validate())
	})
}

// setCase is one Set call and its expected outcome: the field's value
// after a successful Set, or an error.
type setCase struct {
	name    string
	value   any
	want    any
	wantErr bool
}

func runSetCases(t *testing.T, option, field string, cases []setCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConfig()
			before := fieldByName(t, c, field).Interface()
			err := c.Set(option, tt.value)
			if tt.wantErr {
				require.Error(t, err)
				assert.ErrorContains(t, err, option)
				assert.Equal(t, before, fieldByName(t, c, field).Interface(), "a failed Set changed the field")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, fieldByName(t, c, field).Interface())
		})
	}
}

type namedInt int

func TestConfigSetDuration(t *testing.T) {
	runSetCases(t, "dial_timeout", "DialTimeout", []setCase{
		{name: "string ms", value: "1000ms", want: time.Second},
		{name: "string s", value: "1s", want: time.Second},
		{name: "string fractional", value: "1.5s", want: 1500 * time.Millisecond},
		{name: "int ms", value: 1500, want: 1500 * time.Millisecond},
		{name: "int8 ms", value: int8(5), wantErr: true}, // as go-nsq: not an integer kind
		{name: "int32 ms", value: int32(250), want: 250 * time.Millisecond},
		{name: "int64 ms", value: int64(2000), want: 2 * time.Second},
		{name: "named int ms", value: namedInt(3), wantErr: true},
		{name: "int16 ms", value: int16(3), want: 3 * time.Millisecond},
		{name: "uint32 ms", value: uint32(3), want: 3 * time.Millisecond},
		{name: "uint ms", value: uint(7), want: 7 * time.Millisecond},
		{name: "uint64 ms", value: uint64(60000), want: time.Minute},
		{name: "float64 ms", value: 2.5, wantErr: true},
		{name: "float32 ms", value: float32(0.5), wantErr: true},
		{name: "time.Duration", value: 3 * time.Second, want: 3 * time.Second},
		{name: "zero", value: 0, want: time.Duration(0)},
		{name: "bad string", value: "soon", wantErr: true},
		{name: "empty string", value: "", wantErr: true},
		{name: "bool", value: true, wantErr: true},
		{name: "nil", value: nil, wantErr: true},
		{name: "slice", value: []int{1}, wantErr: true},
		{name: "int overflow", value: int64(math.MaxInt64), wantErr: true},
		{name: "uint overflow", value: uint64(math.MaxUint64), wantErr: true},
		{name: "float NaN", value: math.NaN(), wantErr: true},
		{name: "float overflow", value: 1e300, wantErr: true},
	})
}

func TestConfigSetBool(t *testing.T) {
	runSetCases(t, "snappy", "Snappy", []setCase{
		{name: "true", value: true, want: true},
		{name: "false", value: false, want: false},
		{name: "string true", value: "true", want: true},
		{name: "string TRUE", value: "TRUE", want: true},
		{name: "string false", value: "false", want: false},
		{name: "string 1", value: "1", want: true},
		{name: "string 0", value: "0", want: false},
		{name: "int 1", value: 1, want: true},
		{name: "int 0", value: 0, want: false},
		{name: "negative int64", value: int64(-3), want: true},
		{name: "uint8 2", value: uint8(2), wantErr: true},
		{name: "uint16 2", value: uint16(2), want: true},
		{name: "duration", value: time.Second, wantErr: true},
		{name: "uint 0", value: uint(0), want: false},
		{name: "string yes", value: "yes", wantErr: true},
		{name: "empty string", value: "", wantErr: true},
		{name: "float", value: 1.0, wantErr: true},
		{name: "nil", value: nil, wantErr: true},
	})
}

func TestConfigSetInteger(t *testing.T) {
	t.Run("int", func(t *testing.T) {
		runSetCases(t, "max_in_flight", "MaxInFlight", []setCase{
			{name: "string", value: "42", want: 42},
			{name: "int", value: 42, want: 42},
			{name: "int8", value: int8(42), wantErr: true},
			{name: "int16", value: int16(42), want: 42},
			{name: "uint16", value: uint16(42), want: 42},
			{name: "uint64", value: uint64(42), want: 42},
			{name: "whole float64", value: 42.0, wantErr: true},
			{name: "whole float32", value: float32(42), wantErr: true},
			{name: "duration", value: time.Second, wantErr: true},
			{name: "fractional string", value: "4.2", wantErr: true},
			{name: "fractional float", value: 4.2, wantErr: true},
			{name: "word", value: "many", wantErr: true},
			{name: "empty string", value: "", wantErr: true},
			{name: "bool", value: true, wantErr: true},
			{name: "nil", value: nil, wantErr: true},
			{name: "duration string", value: "1s", wantErr: true},
			{name: "uint64 overflow", value: uint64(math.MaxUint64), wantErr: true},
		})
	})
	t.Run("int32", func(t *testing.T) {
		runSetCases(t, "sample_rate", "SampleRate", []setCase{
			{name: "string", value: "50", want: int32(50)},
			{name: "int64", value: int64(50), want: int32(50)},
			{name: "overflow", value: int64(1) << 40, wantErr: true},
		})
	})
	t.Run("int64", func(t *testing.T) {
		runSetCases(t, "output_buffer_size", "OutputBufferSize", []setCase{
			{name: "negative string", value: "-1", want: int64(-1)},
			{name: "large", value: uint32(math.MaxUint32), want: int64(math.MaxUint32)},
		})
	})
	t.Run("uint16", func(t *testing.T) {
		runSetCases(t, "max_attempts", "MaxAttempts", []setCase{
			{name: "string", value: "7", want: uint16(7)},
			{name: "int", value: 7, want: uint16(7)},
			{name: "whole float", value: 7.0, wantErr: true},
			{name: "negative string", value: "-1", wantErr: true},
			{name: "negative int", value: -1, wantErr: true},
			{name: "negative float", value: -1.0, wantErr: true},
			{name: "overflow", value: 70000, wantErr: true},
		})
	})
}

func TestConfigSetFloat(t *testing.T) {
	runSetCases(t, "lookupd_poll_jitter", "LookupdPollJitter", []setCase{
		{name: "string", value: "0.5", want: 0.5},
		{name: "exponent string", value: "1e-1", want: 0.1},
		{name: "float64", value: 0.25, want: 0.25},
		{name: "float32", value: float32(0.75), want: 0.75},
		{name: "int", value: 1, want: 1.0},
		{name: "uint", value: uint(0), want: 0.0},
		{name: "word", value: "half", wantErr: true},
		{name: "NaN", value: math.NaN(), wantErr: true},
		{name: "NaN string", value: "NaN", wantErr: true},
		{name: "bool", value: true, wantErr: true},
	})
}

func TestConfigSetString(t *testing.T) {
	runSetCases(t, "client_id", "ClientID", []setCase{
		{name: "string", value: "worker-1", want: "worker-1"},
		{name: "empty", value: "", want: ""},
		{name: "int", value: 42, want: "42"},
		{name: "uint", value: uint(7), want: "7"},
		{name: "int8", value: int8(5), want: "%!s(int8=5)"},
		{name: "float", value: 1.5, want: "1.500000"},
		{name: "float32", value: float32(0.25), want: "0.250000"},
		{name: "Stringer", value: net.IPv4(10, 0, 0, 1), want: "10.0.0.1"},
		{name: "duration", value: time.Second, want: "1s"},
		{name: "bytes", value: []byte("s3cret"), want: "s3cret"},
		{name: "bool", value: true, want: "%!s(bool=true)"},
		{name: "nil", value: nil, want: "%!s(<nil>)"},
		{name: "slice", value: []string{"a"}, want: "[a]"},
	})
}

func TestConfigSetOptionNames(t *testing.T) {
	tests := []struct {
		option string
		value  any
		field  string
		want   any
	}{
		{"max_in_flight", 5, "MaxInFlight", 5},
		{"max-in-flight", 5, "MaxInFlight", 5},
		{"tls_v1", true, "TlsV1", true},
		{"tls-v1", true, "TlsV1", true},
		{"skip-lookupd-authorization", false, "LookupdAuthorization", false},
		{"max-batch-bytes", "2048", "MaxBatchBytes", 2048},
		{"max_reconnect-backoff", "2s", "MaxReconnectBackoff", 2 * time.Second},
		{"auto-batch", "false", "AutoBatch", false},
	}
	for _, tt := range tests {
		t.Run(tt.option, func(t *testing.T) {
			c := NewConfig()
			require.NoError(t, c.Set(tt.option, tt.value))
			assert.Equal(t, tt.want, fieldByName(t, c, tt.field).Interface())
		})
	}
}

func TestConfigSetUnknownOption(t *testing.T) {
	for _, option := range []string{"no_such_option", "maxinflight", "MAX_IN_FLIGHT", "MaxInFlight", "tls", ""} {
		t.Run(option, func(t *testing.T) {
			err := NewConfig().Set(option, 1)
			require.EqualError(t, err, `nsq: unknown option "`+option+`"`)
		})
	}
}

func TestConfigSetLocalAddr(t *testing.T) {
	unix := &net.UnixAddr{Name: "/tmp/nsq.sock", Net: "unix"}
	tests := []struct {
		name    string
		value   any
		want    string // LocalAddr.String(); "" means nil
		wantErr bool
	}{
		{name: "loopback string", value: "127.0.0.1:0", want: "127.0.0.1:0"},
		{name: "string with port", value: "1.2.3.4:27015", want: "1.2.3.4:27015"},
		{name: "net.Addr", value: unix, want: "/tmp/nsq.sock"},
		{name: "nil", value: nil, want: ""},
		{name: "bad string", value: "not an address", wantErr: true},
		{name: "int", value: 42, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConfig()
			err := c.Set("local_addr", tt.value)
			if tt.wantErr {
				require.ErrorContains(t, err, "local_addr")
				assert.Nil(t, c.LocalAddr)
				return
			}
			require.NoError(t, err)
			if tt.want == "" {
				assert.Nil(t, c.LocalAddr)
				return
			}
			require.NotNil(t, c.LocalAddr)
			assert.Equal(t, tt.want, c.LocalAddr.String())
			if s, ok := tt.value.(string); ok {
				want, err := net.ResolveTCPAddr("tcp", s)
				require.NoError(t, err)
				assert.Equal(t, want, c.LocalAddr)
			} else {
				assert.Same(t, unix, c.LocalAddr)
			}
		})
	}
}

type constantStrategy time.Duration

func (s constantStrategy) Calculate(int) time.Duration { return time.Duration(s) }

func TestConfigSetBackoffStrategy(t *testing.T) {
	t.Run("exponential", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("backoff_strategy", "full_jitter"))
		require.NoError(t, c.Set("backoff_strategy", "exponential"))
		assert.Equal(t, &ExponentialStrategy{cfg: c}, c.BackoffStrategy)
	})
	t.Run("empty means exponential", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("backoff_strategy", ""))
		assert.Equal(t, &ExponentialStrategy{cfg: c}, c.BackoffStrategy)
	})
	t.Run("full_jitter", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("backoff-strategy", "full_jitter"))
		assert.Equal(t, &FullJitterStrategy{cfg: c}, c.BackoffStrategy)
	})
	t.Run("strategy value is bound to the config", func(t *testing.T) {
		c := NewConfig()
		s := &FullJitterStrategy{}
		require.NoError(t, c.Set("backoff_strategy", s))
		assert.Same(t, s, c.BackoffStrategy)
		assert.Same(t, c, s.cfg)
	})
	t.Run("custom strategy", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("backoff_strategy", constantStrategy(time.Second)))
		assert.Equal(t, BackoffStrategy(constantStrategy(time.Second)), c.BackoffStrategy)
	})
	for _, bad := range []any{"linear", "full-jitter", 3, nil} {
		t.Run(fmt.Sprintf("rejects %#v", bad), func(t *testing.T) {
			c := NewConfig()
			before := c.BackoffStrategy
			require.ErrorContains(t, c.Set("backoff_strategy", bad), "backoff_strategy")
			assert.Same(t, before, c.BackoffStrategy)
		})
	}
}

func TestConfigSetTLSConfig(t *testing.T) {
	c := NewConfig()
	tc := &tls.Config{ServerName: "nsqd.example"}
	require.NoError(t, c.Set("tls_config", tc))
	assert.Same(t, tc, c.TlsConfig)
	assert.False(t, c.TlsV1, "tls_config does not enable TLS")

	require.ErrorContains(t, c.Set("tls_config", "nsqd.example"), "tls_config")
	require.ErrorContains(t, c.Set("tls_config", tls.Config{}), "tls_config")
	assert.Same(t, tc, c.TlsConfig)

	require.NoError(t, c.Set("tls_config", nil))
	assert.Nil(t, c.TlsConfig)
}

// TestConfigSetRoundTrip sets every option to its current value, which
// exercises the coercion of every field type.
func TestConfigSetRoundTrip(t *testing.T) {
	c := NewConfig()
	require.NoError(t, c.Set("local_addr", "127.0.0.1:4150"))
	require.NoError(t, c.Set("tls_config", &tls.Config{}))
	for _, o := range configOptions.list {
		t.Run(o.name, func(t *testing.T) {
			f := fieldByName(t, c, o.field)
			before := f.Interface()
			require.NoError(t, c.Set(o.name, before))
			assert.Equal(t, before, f.Interface())
		})
	}
}

// TestConfigBounds checks every min and max at Set time and in Validate:
// the bound itself is accepted, one step past it is rejected with an error
// naming the option.
func TestConfigBounds(t *testing.T) {
	const ns = time.Nanosecond
	tests := []struct {
		opt, field string
		below, min any // nil: no minimum
		max, above any // nil: no maximum
		// prepare sets other fields so that Validate's cross checks pass
		// with the field at its bounds.
		prepare func(c *Config)
	}{
		{opt: "read_timeout", field: "ReadTimeout", below: 100*time.Millisecond - ns, min: 100 * time.Millisecond, max: 5 * time.Minute, above: 5*time.Minute + ns,
			prepare: func(c *Config) { c.HeartbeatInterval = -1 }},
		{opt: "write_timeout", field: "WriteTimeout", below: 100*time.Millisecond - ns, min: 100 * time.Millisecond, max: 5 * time.Minute, above: 5*time.Minute + ns},
		{opt: "lookupd_poll_interval", field: "LookupdPollInterval", below: 10*time.Millisecond - ns, min: 10 * time.Millisecond, max: 5 * time.Minute, above: 5*time.Minute + ns},
		{opt: "lookupd_poll_jitter", field: "LookupdPollJitter", below: -0.001, min: 0.0, max: 1.0, above: 1.001},
		{opt: "max_requeue_delay", field: "MaxRequeueDelay", below: -ns, min: time.Duration(0), max: 60 * time.Minute, above: 60*time.Minute + ns},
		{opt: "default_requeue_delay", field: "DefaultRequeueDelay", below: -ns, min: time.Duration(0), max: 60 * time.Minute, above: 60*time.Minute + ns},
		{opt: "max_backoff_duration", field: "MaxBackoffDuration", below: -ns, min: time.Duration(0), max: 60 * time.Minute, above: 60*time.Minute + ns},
		{opt: "backoff_multiplier", field: "BackoffMultiplier", below: -ns, min: time.Duration(0), max: 60 * time.Minute, above: 60*time.Minute + ns},
		// A uint16 field cannot hold -1 or 65536, so these only reach Set.
		{opt: "max_attempts", field: "MaxAttempts", below: -1, min: uint16(0), max: uint16(65535), above: 65536},
		{opt: "low_rdy_idle_timeout", field: "LowRdyIdleTimeout", below: time.Second - ns, min: time.Second, max: 5 * time.Minute, above: 5*time.Minute + ns},
		{opt: "low_rdy_timeout", field: "LowRdyTimeout", below: time.Second - ns, min: time.Second, max: 5 * time.Minute, above: 5*time.Minute + ns},
		{opt: "rdy_redistribute_interval", field: "RDYRedistributeInterval", below: time.Millisecond - ns, min: time.Millisecond, max: 5 * time.Second, above: 5*time.Second + ns},
		{opt: "sample_rate", field: "SampleRate", below: int32(-1), min: int32(0), max: int32(99), above: int32(100)},
		{opt: "deflate_level", field: "DeflateLevel", below: 0, min: 1, max: 9, above: 10},
		{opt: "max_in_flight", field: "MaxInFlight", below: -1, min: 0},
		{opt: "msg_timeout", field: "MsgTimeout", below: -ns, min: time.Duration(0)},
		{opt: "max_msg_size", field: "MaxMsgSize", below: int64(-1), min: int64(0)},
		{opt: "max_body_size", field: "MaxBodySize", below: int64(-1), min: int64(0)},
		{opt: "max_deferred_delay", field: "MaxDeferredDelay", below: -ns, min: time.Duration(0)},
		{opt: "max_frame_size", field: "MaxFrameSize", below: int64(1023), min: int64(1024)},
		{opt: "stop_timeout", field: "StopTimeout", below: -ns, min: time.Duration(0)},
		{opt: "reconnect_backoff", field: "ReconnectBackoff", below: -ns, min: time.Duration(0)},
		{opt: "max_reconnect_backoff", field: "MaxReconnectBackoff", below: -ns, min: time.Duration(0),
			prepare: func(c *Config) { c.ReconnectBackoff = 0 }},
		{opt: "max_batch_messages", field: "MaxBatchMessages", below: 0, min: 1, max: 100000, above: 100001},
		{opt: "max_batch_bytes", field: "MaxBatchBytes", below: 1023, min: 1024, max: 5242880, above: 5242881},
		{opt: "max_pending", field: "MaxPending", below: 0, min: 1},
		{opt: "max_pending_bytes", field: "MaxPendingBytes", below: int64(0), min: int64(1)},
		{opt: "pool_max_attempts", field: "PoolMaxAttempts", below: 0, min: 1, max: 100, above: 101},
	}

	t.Run("table covers every bounded option", func(t *testing.T) {
		var bounded []string
		for _, o := range configOptions.list {
			if o.min.IsValid() || o.max.IsValid() {
				bounded = append(bounded, o.name)
			}
		}
		var listed []string
		for _, tt := range tests {
			listed = append(listed, tt.opt)
		}
		assert.ElementsMatch(t, bounded, listed)
	})

	for _, tt := range tests {
		o := configOptions.byName[tt.opt]
		require.NotNil(t, o, tt.opt)
		t.Run(tt.opt, func(t *testing.T) {
			assert.Equal(t, tt.field, o.field)
			assert.Equal(t, tt.min != nil, o.min.IsValid(), "has a minimum")
			assert.Equal(t, tt.max != nil, o.max.IsValid(), "has a maximum")

			check := func(t *testing.T, value, accepted any, wantBound string) {
				// Set
				c := NewConfig()
				require.NoError(t, c.Set(tt.opt, accepted))
				assert.Equal(t, accepted, fieldByName(t, c, tt.field).Interface())
				err := c.Set(tt.opt, value)
				require.Error(t, err)
				assert.ErrorContains(t, err, tt.opt)
				if reflect.TypeOf(value) == o.typ {
					assert.ErrorContains(t, err, wantBound)
				}
				assert.Equal(t, accepted, fieldByName(t, c, tt.field).Interface(), "a rejected Set changed the field")

				// Validate
				c = NewConfig()
				if tt.prepare != nil {
					tt.prepare(c)
				}
				f := fieldByName(t, c, tt.field)
				f.Set(reflect.ValueOf(accepted))
				require.NoError(t, c.Validate())
				if reflect.TypeOf(value) != o.typ {
					return // not representable in the field
				}
				f.Set(reflect.ValueOf(value))
				err = c.Validate()
				require.Error(t, err)
				assert.ErrorContains(t, err, tt.opt)
				assert.ErrorContains(t, err, wantBound)
			}
			if tt.min != nil {
				t.Run("min", func(t *testing.T) {
					check(t, tt.below, tt.min, "is below the minimum")
				})
			}
			if tt.max != nil {
				t.Run("max", func(t *testing.T) {
					check(t, tt.above, tt.max, "is above the maximum")
				})
			}
		})
	}
}

func TestConfigErrorMessages(t *testing.T) {
	tests := []struct {
		name string
		run  func(c *Config) error
		want string
	}{
		{"Set below min", func(c *Config) error { return c.Set("read_timeout", "99ms") },
			"nsq: invalid option read_timeout (Config.ReadTimeout): 99ms is below the minimum 100ms"},
		{"Set above max", func(c *Config) error { return c.Set("max_batch_bytes", 5242881) },
			"nsq: invalid option max_batch_bytes (Config.MaxBatchBytes): 5242881 is above the maximum 5242880"},
		{"Set float above max", func(c *Config) error { return c.Set("lookupd_poll_jitter", "1.5") },
			"nsq: invalid option lookupd_poll_jitter (Config.LookupdPollJitter): 1.5 is above the maximum 1"},
		{"Set uncoercible", func(c *Config) error { return c.Set("max_attempts", -1) },
			"nsq: cannot set option max_attempts to -1: -1 is negative"},
		{"Set wrong type", func(c *Config) error { return c.Set("deflate", 1.5) },
			"nsq: cannot set option deflate to 1.5: want a bool, a bool string or an integer, got float64"},
		{"Validate above max", func(c *Config) error { c.DeflateLevel = 10; return c.Validate() },
			"nsq: invalid option deflate_level (Config.DeflateLevel): 10 is above the maximum 9"},
		{"Validate below min", func(c *Config) error { c.MaxFrameSize = 0; return c.Validate() },
			"nsq: invalid option max_frame_size (Config.MaxFrameSize): 0 is below the minimum 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.EqualError(t, tt.run(NewConfig()), tt.want)
		})
	}
}

func TestConfigValidateCrossChecks(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(c *Config)
		wantErr string // "" means valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"snappy only", func(c *Config) { c.Snappy = true }, ""},
		{"deflate only", func(c *Config) { c.Deflate = true }, ""},
		{"snappy and deflate", func(c *Config) { c.Snappy, c.Deflate = true, true },
			"nsq: invalid options snappy and deflate: both are enabled but nsqd accepts only one compression"},
		{"max reconnect backoff below reconnect backoff", func(c *Config) {
			c.ReconnectBackoff, c.MaxReconnectBackoff = 2*time.Second, time.Second
		}, "nsq: invalid option max_reconnect_backoff: 1s is below reconnect_backoff 2s"},
		{"max reconnect backoff equal to reconnect backoff", func(c *Config) {
			c.ReconnectBackoff, c.MaxReconnectBackoff = time.Second, time.Second
		}, ""},
		{"no reconnect backoff", func(c *Config) { c.ReconnectBackoff, c.MaxReconnectBackoff = 0, 0 }, ""},
		{"heartbeat above read timeout", func(c *Config) {
			c.HeartbeatInterval, c.ReadTimeout = 61*time.Second, time.Minute
		}, "nsq: invalid option heartbeat_interval: 1m1s must be below read_timeout 1m0s by at least 6s, or an idle connection times out between two heartbeats; set heartbeat_interval to -1 to disable heartbeats (an idle connection then has no read deadline)"},
		// Issue 9: 1s/1s passed Validate and the connection died idle.
		{"heartbeat equal to read timeout", func(c *Config) { c.HeartbeatInterval, c.ReadTimeout = time.Second, time.Second },
			"nsq: invalid option heartbeat_interval: 1s must be below read_timeout 1s by at least 100ms, or an idle connection times out between two heartbeats; set heartbeat_interval to -1 to disable heartbeats (an idle connection then has no read deadline)"},
		{"heartbeat within the margin", func(c *Config) { c.HeartbeatInterval, c.ReadTimeout = 55*time.Second, time.Minute },
			"nsq: invalid option heartbeat_interval: 55s must be below read_timeout 1m0s by at least 6s, or an idle connection times out between two heartbeats; set heartbeat_interval to -1 to disable heartbeats (an idle connection then has no read deadline)"},
		{"heartbeat at the margin", func(c *Config) { c.HeartbeatInterval, c.ReadTimeout = 54*time.Second, time.Minute }, ""},
		{"heartbeat 1s under read timeout 1.2s", func(c *Config) { c.HeartbeatInterval, c.ReadTimeout = time.Second, 1200*time.Millisecond }, ""},
		{"heartbeats disabled (-1ns)", func(c *Config) { c.HeartbeatInterval = -1 }, ""},
		{"heartbeats disabled (-1ms)", func(c *Config) { c.HeartbeatInterval = -time.Millisecond }, ""},
		{"heartbeats disabled with a short read timeout", func(c *Config) { c.HeartbeatInterval, c.ReadTimeout = -1, 100*time.Millisecond }, ""},
		{"heartbeat -1s", func(c *Config) { c.HeartbeatInterval = -time.Second },
			"nsq: invalid option heartbeat_interval: -1s; nsqd accepts -1 (no heartbeats), 0 (its default, 30s) or 1s up to its --max-heartbeat-interval"},
		{"heartbeat -1.5ms", func(c *Config) { c.HeartbeatInterval = -1500 * time.Microsecond }, ""}, // -1, as go-nsq sends it
		{"heartbeat -2ms", func(c *Config) { c.HeartbeatInterval = -2 * time.Millisecond },
			"nsq: invalid option heartbeat_interval: -2ms; nsqd accepts -1 (no heartbeats), 0 (its default, 30s) or 1s up to its --max-heartbeat-interval"},
		{"heartbeat sub-millisecond", func(c *Config) { c.HeartbeatInterval = 500 * time.Microsecond },
			"nsq: invalid option heartbeat_interval: 500µs is not a whole number of milliseconds above zero; IDENTIFY would carry 0, which nsqd reads as its default (30s)"},
		{"heartbeat negative sub-millisecond", func(c *Config) { c.HeartbeatInterval = -500 * time.Microsecond },
			"nsq: invalid option heartbeat_interval: -500µs is not a whole number of milliseconds above zero; IDENTIFY would carry 0, which nsqd reads as its default (30s)"},
		{"heartbeat 0 is nsqd's 30s", func(c *Config) { c.HeartbeatInterval, c.ReadTimeout = 0, 31*time.Second },
			"nsq: invalid option heartbeat_interval: 0s must be below read_timeout 31s by at least 3.1s, or an idle connection times out between two heartbeats; set heartbeat_interval to -1 to disable heartbeats (an idle connection then has no read deadline)"},
		{"heartbeat 0 with the default read timeout", func(c *Config) { c.HeartbeatInterval = 0 }, ""},
		// nsqd refuses 1ms to 999ms with an ErrIdentify, as with go-nsq
		// (whose TestProducerHeartbeat counts on it).
		{"heartbeat 100ms is left to nsqd", func(c *Config) { c.HeartbeatInterval = 100 * time.Millisecond }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConfig()
			tt.prepare(c)
			err := c.Validate()
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.wantErr)
		})
	}
	t.Run("Set leaves cross checks to Validate", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("snappy", true))
		require.NoError(t, c.Set("deflate", true))
		require.Error(t, c.Validate())
	})
}

func TestConfigUninitializedPanics(t *testing.T) {
	const msg = "nsq: Config must be created with NewConfig()"
	tests := []struct {
		name string
		f    func()
	}{
		{"Set on struct literal", func() { _ = (&Config{}).Set("snappy", true) }},
		{"Validate on struct literal", func() { _ = (&Config{}).Validate() }},
		{"Set on nil", func() { _ = (*Config)(nil).Set("snappy", true) }},
		{"Validate on nil", func() { _ = (*Config)(nil).Validate() }},
		{"Set unknown option on struct literal", func() { _ = (&Config{}).Set("nope", 1) }},
		{"ConfigFlag with struct literal", func() { _ = (&ConfigFlag{Config: &Config{}}).Set("snappy") }},
		{"ConfigFlag without Config", func() { _ = (&ConfigFlag{}).Set("snappy,true") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.PanicsWithValue(t, msg, tt.f)
		})
	}
}

func TestConfigCopy(t *testing.T) {
	orig := NewConfig()
	cp := *orig
	require.NoError(t, cp.Set("max_in_flight", 9))
	require.NoError(t, cp.Validate())
	assert.Equal(t, 9, cp.MaxInFlight)
	assert.Equal(t, 1, orig.MaxInFlight)
}

func TestConfigFlag(t *testing.T) {
	tests := []struct {
		arg     string
		field   string
		want    any
		wantErr string // substring; "" means success
	}{
		{arg: "max_in_flight,5", field: "MaxInFlight", want: 5},
		{arg: "max-in-flight,5", field: "MaxInFlight", want: 5},
		{arg: "heartbeat_interval,1s", field: "HeartbeatInterval", want: time.Second},
		{arg: "snappy", field: "Snappy", want: true},
		{arg: "auto_batch,false", field: "AutoBatch", want: false},
		{arg: "client_id,a,b", field: "ClientID", want: "a,b"},
		{arg: "client_id,", field: "ClientID", want: ""},
		{arg: "no_such_option,1", wantErr: `unknown option "no_such_option"`},
		{arg: "max_in_flight,lots", wantErr: "max_in_flight"},
		{arg: "max_in_flight", wantErr: "max_in_flight"}, // bare means true, not a number
	}
	for _, tt := range tests {
		t.Run(tt.arg, func(t *testing.T) {
			c := NewConfig()
			f := &ConfigFlag{Config: c}
			err := f.Set(tt.arg)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, fieldByName(t, c, tt.field).Interface())
		})
	}

	t.Run("String", func(t *testing.T) {
		c := NewConfig()
		assert.Equal(t, "", (&ConfigFlag{Config: c}).String())
		assert.Equal(t, "", (&ConfigFlag{}).String())
	})

	t.Run("FlagSet", func(t *testing.T) {
		c := NewConfig()
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Var(&ConfigFlag{Config: c}, "producer-opt", "option,value (may be repeated)")
		err := fs.Parse([]string{
			"-producer-opt=heartbeat_interval,1s",
			"--producer-opt", "max_batch_messages,10",
			"-producer-opt=auto-batch,false",
			"-producer-opt=tls_v1",
			"rest",
		})
		require.NoError(t, err)
		assert.Equal(t, time.Second, c.HeartbeatInterval)
		assert.Equal(t, 10, c.MaxBatchMessages)
		assert.False(t, c.AutoBatch)
		assert.True(t, c.TlsV1)
		assert.Equal(t, []string{"rest"}, fs.Args())
	})

	t.Run("FlagSet error", func(t *testing.T) {
		c := NewConfig()
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Var(&ConfigFlag{Config: c}, "producer-opt", "")
		err := fs.Parse([]string{"-producer-opt=max_batch_messages,0"})
		require.ErrorContains(t, err, "max_batch_messages")
		assert.Equal(t, 512, c.MaxBatchMessages)
	})
}

// testCert is a self-signed CA certificate and its key, written as PEM
// files.
type testCert struct {
	cert     *x509.Certificate
	certFile string
	keyFile  string
}

func newTestCert(t *testing.T) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "nsqkit test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)

	dir := t.TempDir()
	tc := testCert{
		cert:     cert,
		certFile: filepath.Join(dir, "ca.pem"),
		keyFile:  filepath.Join(dir, "ca-key.pem"),
	}
	require.NoError(t, os.WriteFile(tc.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(tc.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	return tc
}

func TestConfigTLSOptions(t *testing.T) {
	ca := newTestCert(t)

	t.Run("tls_root_ca_file", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("tls_root_ca_file", ca.certFile))
		require.NotNil(t, c.TlsConfig)
		require.NotNil(t, c.TlsConfig.RootCAs)
		_, err := ca.cert.Verify(x509.VerifyOptions{Roots: c.TlsConfig.RootCAs})
		assert.NoError(t, err, "the pool trusts the CA from the file")
		assert.False(t, c.TlsV1, "TLS options do not enable TLS")

		other := newTestCert(t)
		_, err = other.cert.Verify(x509.VerifyOptions{Roots: c.TlsConfig.RootCAs})
		assert.Error(t, err, "the pool trusts nothing else")
	})
	t.Run("tls-root-ca-file", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("tls-root-ca-file", ca.certFile))
		want := x509.NewCertPool()
		want.AddCert(ca.cert)
		assert.True(t, want.Equal(c.TlsConfig.RootCAs))
	})
	for _, tt := range []struct {
		name  string
		value any
	}{
		{"missing file", filepath.Join(t.TempDir(), "missing.pem")},
		{"file without PEM", ca.keyFile},
		{"not a string", 42},
	} {
		t.Run("tls_root_ca_file "+tt.name, func(t *testing.T) {
			c := NewConfig()
			require.ErrorContains(t, c.Set("tls_root_ca_file", tt.value), "tls_root_ca_file")
			assert.Nil(t, c.TlsConfig, "a failed TLS option leaves the Config unchanged")
		})
	}

	t.Run("tls_cert then tls_key", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("tls_cert", ca.certFile))
		require.NotNil(t, c.TlsConfig)
		assert.Empty(t, c.TlsConfig.Certificates, "nothing loaded before the key is known")
		require.NoError(t, c.Set("tls_key", ca.keyFile))
		require.Len(t, c.TlsConfig.Certificates, 1)
		assert.Equal(t, [][]byte{ca.cert.Raw}, c.TlsConfig.Certificates[0].Certificate)
		assert.False(t, c.TlsV1)
	})
	t.Run("tls-key then tls-cert", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("tls-key", ca.keyFile))
		require.NoError(t, c.Set("tls-cert", ca.certFile))
		require.Len(t, c.TlsConfig.Certificates, 1)
		assert.Equal(t, [][]byte{ca.cert.Raw}, c.TlsConfig.Certificates[0].Certificate)
	})
	t.Run("tls_cert and tls_key mismatch", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("tls_cert", ca.certFile))
		require.ErrorContains(t, c.Set("tls_key", ca.certFile), "tls_key")
		assert.Empty(t, c.TlsConfig.Certificates)
		require.NoError(t, c.Set("tls_key", ca.keyFile), "a later correct key still loads")
		require.Len(t, c.TlsConfig.Certificates, 1)
	})
	t.Run("tls_cert not a string", func(t *testing.T) {
		require.ErrorContains(t, NewConfig().Set("tls_cert", 1), "tls_cert")
	})

	for _, tt := range []struct {
		value   any
		want    uint16
		wantErr bool
	}{
		{value: "ssl3.0", want: tls.VersionSSL30}, //nolint:staticcheck // go-nsq accepts it
		{value: "tls1.0", want: tls.VersionTLS10},
		{value: "tls1.1", want: tls.VersionTLS11},
		{value: "tls1.2", want: tls.VersionTLS12},
		{value: "tls1.3", want: tls.VersionTLS13},
		{value: "tls1.4", wantErr: true},
		{value: "TLS1.2", wantErr: true},
		{value: "", wantErr: true},
		{value: tls.VersionTLS12, wantErr: true},
	} {
		t.Run(fmt.Sprintf("tls_min_version %#v", tt.value), func(t *testing.T) {
			c := NewConfig()
			err := c.Set("tls-min-version", tt.value)
			if tt.wantErr {
				require.ErrorContains(t, err, "tls_min_version")
				assert.Nil(t, c.TlsConfig)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, c.TlsConfig.MinVersion)
			assert.False(t, c.TlsV1)
		})
	}

	for _, tt := range []struct {
		value   any
		want    bool
		wantErr bool
	}{
		{value: true, want: true},
		{value: "true", want: true},
		{value: 1, want: true},
		{value: false, want: false},
		{value: "false", want: false},
		{value: "maybe", wantErr: true},
	} {
		t.Run(fmt.Sprintf("tls_insecure_skip_verify %#v", tt.value), func(t *testing.T) {
			c := NewConfig()
			err := c.Set("tls_insecure_skip_verify", tt.value)
			if tt.wantErr {
				require.ErrorContains(t, err, "tls_insecure_skip_verify")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, c.TlsConfig.InsecureSkipVerify)
			assert.False(t, c.TlsV1)
		})
	}

	t.Run("existing TlsConfig is updated in place", func(t *testing.T) {
		c := NewConfig()
		tc := &tls.Config{ServerName: "nsqd.example"}
		c.TlsConfig = tc
		require.NoError(t, c.Set("tls_min_version", "tls1.2"))
		require.NoError(t, c.Set("tls_insecure_skip_verify", true))
		assert.Same(t, tc, c.TlsConfig)
		assert.Equal(t, uint16(tls.VersionTLS12), tc.MinVersion)
		assert.True(t, tc.InsecureSkipVerify)
		assert.Equal(t, "nsqd.example", tc.ServerName)
	})
}

func TestExponentialStrategy(t *testing.T) {
	tests := []struct {
		name          string
		multiplier    time.Duration
		maxBackoff    time.Duration
		attempt       int
		want          time.Duration
		unboundConfig bool
	}{
		{name: "attempt 0", multiplier: time.Second, maxBackoff: 2 * time.Minute, attempt: 0, want: time.Second},
		{name: "attempt 1", multiplier: time.Second, maxBackoff: 2 * time.Minute, attempt: 1, want: 2 * time.Second},
		{name: "attempt 3", multiplier: time.Second, maxBackoff: 2 * time.Minute, attempt: 3, want: 8 * time.Second},
		{name: "attempt 5", multiplier: time.Second, maxBackoff: 2 * time.Minute, attempt: 5, want: 32 * time.Second},
		{name: "attempt 6", multiplier: time.Second, maxBackoff: 2 * time.Minute, attempt: 6, want: 64 * time.Second},
		{name: "capped", multiplier: time.Second, maxBackoff: 2 * time.Minute, attempt: 7, want: 2 * time.Minute},
		{name: "exactly the cap", multiplier: time.Second, maxBackoff: 64 * time.Second, attempt: 6, want: 64 * time.Second},
		{name: "huge attempt", multiplier: time.Second, maxBackoff: 2 * time.Minute, attempt: 1000, want: 2 * time.Minute},
		{name: "max int attempt", multiplier: time.Second, maxBackoff: 2 * time.Minute, attempt: math.MaxInt, want: 2 * time.Minute},
		{name: "negative attempt", multiplier: time.Second, maxBackoff: 2 * time.Minute, attempt: -1, want: time.Second},
		{name: "small multiplier", multiplier: 10 * time.Millisecond, maxBackoff: time.Second, attempt: 6, want: 640 * time.Millisecond},
		{name: "small multiplier capped", multiplier: 10 * time.Millisecond, maxBackoff: time.Second, attempt: 7, want: time.Second},
		{name: "zero multiplier", multiplier: 0, maxBackoff: 2 * time.Minute, attempt: 3, want: 0},
		{name: "zero max backoff", multiplier: time.Second, maxBackoff: 0, attempt: 3, want: 0},
		{name: "max multiplier and max backoff", multiplier: time.Hour, maxBackoff: time.Hour, attempt: 62, want: time.Hour},
		{name: "unbound uses defaults", unboundConfig: true, attempt: 3, want: 8 * time.Second},
		{name: "unbound capped at 2m", unboundConfig: true, attempt: 10, want: 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.unboundConfig {
				assert.Equal(t, tt.want, (&ExponentialStrategy{}).Calculate(tt.attempt))
				return
			}
			c := NewConfig()
			require.NoError(t, c.Set("backoff_multiplier", tt.multiplier))
			require.NoError(t, c.Set("max_backoff_duration", tt.maxBackoff))
			assert.Equal(t, tt.want, c.BackoffStrategy.Calculate(tt.attempt))
		})
	}
}

func TestFullJitterStrategy(t *testing.T) {
	t.Run("draws below the exponential value", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("backoff_strategy", "full_jitter"))
		s := c.BackoffStrategy.(*FullJitterStrategy)
		var gotN int64
		s.int64N = func(n int64) int64 { gotN = n; return n - 1 }
		for _, tt := range []struct {
			attempt int
			bound   time.Duration
		}{
			{0, time.Second},
			{1, 2 * time.Second},
			{3, 8 * time.Second},
			{5, 32 * time.Second},
			{7, 2 * time.Minute},
			{1000, 2 * time.Minute},
		} {
			assert.Equal(t, tt.bound-1, s.Calculate(tt.attempt), "attempt %d", tt.attempt)
			assert.Equal(t, int64(tt.bound), gotN, "attempt %d", tt.attempt)
		}
		c.BackoffMultiplier = 5 * time.Millisecond
		s.Calculate(2)
		assert.Equal(t, int64(20*time.Millisecond), gotN, "reads the Config at each call")
	})
	t.Run("zero bound returns 0 without drawing", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("backoff_multiplier", 0))
		require.NoError(t, c.Set("backoff_strategy", "full_jitter"))
		s := c.BackoffStrategy.(*FullJitterStrategy)
		s.int64N = func(int64) int64 { t.Fatal("drew a random number"); return 0 }
		assert.Equal(t, time.Duration(0), s.Calculate(5))
	})
	t.Run("real random values stay in range", func(t *testing.T) {
		c := NewConfig()
		require.NoError(t, c.Set("backoff_strategy", "full_jitter"))
		for attempt := range 10 {
			bound := min(time.Second<<attempt, 2*time.Minute)
			for range 200 {
				d := c.BackoffStrategy.Calculate(attempt)
				require.GreaterOrEqual(t, d, time.Duration(0))
				require.Less(t, d, bound)
			}
		}
	})
	t.Run("unbound uses defaults", func(t *testing.T) {
		var gotN int64
		s := &FullJitterStrategy{int64N: func(n int64) int64 { gotN = n; return 0 }}
		s.Calculate(3)
		assert.Equal(t, int64(8*time.Second), gotN)
	})
}
