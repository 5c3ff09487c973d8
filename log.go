package nsq

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// logger is what SetLogger takes: *log.Logger is one, as in go-nsq.
type logger interface {
	Output(calldepth int, s string) error
}

// LogLevel is the severity of a log line.
type LogLevel int

// Log levels, lowest first.
const (
	LogLevelDebug LogLevel = iota
	LogLevelInfo
	LogLevelWarning
	LogLevelError
	LogLevelMax = iota - 1 // the highest level
)

// String returns the level's three-letter tag: "DBG", "INF", "WRN" or "ERR".
func (lvl LogLevel) String() string {
	switch lvl {
	case LogLevelInfo:
		return "INF"
	case LogLevelWarning:
		return "WRN"
	case LogLevelError:
		return "ERR"
	}
	return "DBG"
}

// SlogLogger lets a *slog.Logger be a Producer's logger:
//
//	p.SetLogger(nsq.NewSlogLogger(slog.Default()), nsq.LogLevelDebug)
//
// Levels map to slog's (Debug, Info, Warn, Error) and each record carries
// the producer's id and nsqd address as attributes "producer" and "nsqd".
// The level given to SetLogger still filters first; pass LogLevelDebug to
// leave filtering to the slog handler.
type SlogLogger struct {
	l *slog.Logger
}

// NewSlogLogger returns a logger for [Producer.SetLogger] that writes to l.
func NewSlogLogger(l *slog.Logger) *SlogLogger {
	return &SlogLogger{l: l}
}

// Output logs a line in go-nsq's format ("INF    1 message"), taking the
// level from its tag. It is how the logger interface is met; a Producer
// calls the structured path instead.
func (s *SlogLogger) Output(calldepth int, line string) error {
	lvl := LogLevelInfo
	tag, rest, _ := strings.Cut(line, " ")
	switch tag {
	case "DBG":
		lvl = LogLevelDebug
	case "WRN":
		lvl = LogLevelWarning
	case "ERR":
		lvl = LogLevelError
	case "INF":
	default:
		rest = line
	}
	// Then the producer's id, right-aligned: "  7 message".
	if id, msg, ok := strings.Cut(strings.TrimLeft(rest, " "), " "); ok && strings.Trim(id, "0123456789") == "" {
		rest = msg
	}
	s.l.Log(context.Background(), slogLevel(lvl), rest)
	return nil
}

func (s *SlogLogger) log(lvl LogLevel, id int64, addr, msg string) {
	s.l.Log(context.Background(), slogLevel(lvl), msg, slog.Int64("producer", id), slog.String("nsqd", addr))
}

func slogLevel(lvl LogLevel) slog.Level {
	switch lvl {
	case LogLevelDebug:
		return slog.LevelDebug
	case LogLevelWarning:
		return slog.LevelWarn
	case LogLevelError:
		return slog.LevelError
	}
	return slog.LevelInfo
}

// logSink is a producer's logging state, shared by its public methods
// (SetLogger and friends), its router and its Conns.
type logSink struct {
	id   int64  // the producer's, in every line
	addr string // the nsqd address, for SlogLogger's attribute

	mu     sync.RWMutex
	logger [LogLevelMax + 1]logger // guarded by mu; nil: silent
	lvl    LogLevel                // guarded by mu; the lowest level logged
}

// set sets the logger for every level, and the lowest level logged.
func (s *logSink) set(l logger, lvl LogLevel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.logger {
		s.logger[i] = l
	}
	s.lvl = lvl
}

// setForLevel sets the logger for one level.
func (s *logSink) setForLevel(l logger, lvl LogLevel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lvl >= 0 && lvl <= LogLevelMax {
		s.logger[lvl] = l
	}
}

// setLevel sets the lowest level logged.
func (s *logSink) setLevel(lvl LogLevel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lvl = lvl
}

// enabled returns the logger for lvl, or nil when lvl is filtered out.
func (s *logSink) enabled(lvl LogLevel) logger {
	if lvl < 0 || lvl > LogLevelMax {
		return nil
	}
	s.mu.RLock()
	l, min := s.logger[lvl], s.lvl
	s.mu.RUnlock()
	if lvl < min {
		return nil
	}
	return l
}

// log formats and writes a line at lvl, unless lvl is filtered out. The
// logger is called outside the lock.
func (s *logSink) log(lvl LogLevel, format string, args ...any) {
	l := s.enabled(lvl)
	if l == nil {
		return
	}
	if f, ok := l.(poolLogForward); ok {
		// A pool's node: its lines go to the pool's logger, as its own
		// when that is an SlogLogger (with this producer's attributes).
		if l = f.p.logs.enabled(f.lvl); l == nil {
			return
		}
	}
	if sl, ok := l.(*SlogLogger); ok {
		sl.log(lvl, s.id, s.addr, fmt.Sprintf(format, args...))
		return
	}
	l.Output(2, fmt.Sprintf("%-4s %3d %s", lvl, s.id, fmt.Sprintf(format, args...)))
}
