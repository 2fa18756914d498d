package zapslog

import (
	"fmt"
	"log/slog"
	"os"

	"google.golang.org/grpc/grpclog"
)

// SetGRPCLogger routes gRPC's global logger (used by etcd's client and server) into
// logger at warn level and above; gRPC's info level logs every connection state change.
// gRPC requires this to be called before any gRPC activity, so call it first in main
// (or TestMain); it is global to the process.
func SetGRPCLogger(logger *slog.Logger) {
	if logger == nil {
		logger = slog.Default()
	}
	grpclog.SetLoggerV2(grpcLogger{l: logger.With(slog.String("logger", "grpc"))})
}

// grpcLogger implements grpclog.LoggerV2 on top of slog, dropping info-level chatter.
type grpcLogger struct{ l *slog.Logger }

func (grpcLogger) Info(...any)                   {}
func (grpcLogger) Infoln(...any)                 {}
func (grpcLogger) Infof(string, ...any)          {}
func (g grpcLogger) Warning(a ...any)            { g.l.Warn(fmt.Sprint(a...)) }
func (g grpcLogger) Warningln(a ...any)          { g.l.Warn(fmt.Sprint(a...)) }
func (g grpcLogger) Warningf(f string, a ...any) { g.l.Warn(fmt.Sprintf(f, a...)) }
func (g grpcLogger) Error(a ...any)              { g.l.Error(fmt.Sprint(a...)) }
func (g grpcLogger) Errorln(a ...any)            { g.l.Error(fmt.Sprint(a...)) }
func (g grpcLogger) Errorf(f string, a ...any)   { g.l.Error(fmt.Sprintf(f, a...)) }
func (g grpcLogger) Fatal(a ...any)              { g.l.Error(fmt.Sprint(a...)); os.Exit(1) }
func (g grpcLogger) Fatalln(a ...any)            { g.l.Error(fmt.Sprint(a...)); os.Exit(1) }
func (g grpcLogger) Fatalf(f string, a ...any)   { g.l.Error(fmt.Sprintf(f, a...)); os.Exit(1) }
func (grpcLogger) V(l int) bool                  { return false }
