// Package zapslog routes zap logs (etcd's server and client log through zap) into a
// log/slog logger, so the whole process has one structured log stream. It lives under
// controlplane/client because both the client (imported by data-plane nodes, which may
// import nothing else of the control plane) and the control-plane server use it.
package zapslog

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a zap logger that forwards entries at or above minLevel to logger.
// etcd is chatty at info level (every raft tick of note, every lease), so callers pass
// zapcore.WarnLevel to keep Gregor's logs quiet by default.
func New(logger *slog.Logger, minLevel zapcore.Level) *zap.Logger {
	if logger == nil {
		logger = slog.Default()
	}
	return zap.New(&core{logger: logger, min: minLevel})
}

// core is a zapcore.Core that writes to slog. It keeps fields added with With so that
// named sub-loggers (etcd uses lg.With(...) a lot) keep their context.
type core struct {
	logger *slog.Logger
	min    zapcore.Level
	attrs  []any
}

func (c *core) Enabled(l zapcore.Level) bool { return l >= c.min }

func (c *core) With(fields []zapcore.Field) zapcore.Core {
	attrs := append(append([]any(nil), c.attrs...), fieldsToAttrs(fields)...)
	return &core{logger: c.logger, min: c.min, attrs: attrs}
}

// demoted are etcd messages logged at warn or error in normal operation: on every
// fresh start ("missing term information") and on every clean shutdown (its listeners
// closing). They are passed on at info level so warn-level logs stay meaningful.
var demoted = map[string]bool{
	"failed to update storage version":              true,
	"setting up serving from embedded etcd failed.": true,
}

func (c *core) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if demoted[e.Message] && e.Level > zapcore.InfoLevel {
		e.Level = zapcore.InfoLevel
	}
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *core) Write(e zapcore.Entry, fields []zapcore.Field) error {
	attrs := append(append([]any(nil), c.attrs...), fieldsToAttrs(fields)...)
	if e.LoggerName != "" {
		attrs = append(attrs, slog.String("logger", e.LoggerName))
	}
	c.logger.Log(context.Background(), toSlogLevel(e.Level), e.Message, attrs...)
	return nil
}

func (c *core) Sync() error { return nil }

func fieldsToAttrs(fields []zapcore.Field) []any {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]any, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	return attrs
}

func toSlogLevel(l zapcore.Level) slog.Level {
	switch {
	case l >= zapcore.ErrorLevel:
		return slog.LevelError
	case l >= zapcore.WarnLevel:
		return slog.LevelWarn
	case l >= zapcore.InfoLevel:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}
