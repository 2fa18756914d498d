package client

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Error is a control-plane refusal that a data-plane node answers to its Kafka client
// with a specific error code. Code is franz-go's entry for that code, so
//
//	var ke *kerr.Error
//	if errors.As(err, &ke) { code = ke.Code }
//
// and errors.Is(err, kerr.InvalidReplicationFactor) both work. Errors that are not an
// *Error (etcd unavailable, context expired) map to a retriable code such as
// REQUEST_TIMED_OUT at the request boundary.
type Error struct {
	// Code is the Kafka error code.
	Code *kerr.Error
	// Message says what was wrong, for Kafka responses that carry an error message.
	Message string
}

// Error returns the Kafka code's message and what was wrong.
func (e *Error) Error() string { return e.Code.Message + ": " + e.Message }

// Unwrap exposes the Kafka code to errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Code }

// errorf returns an *Error with code and a formatted message.
func errorf(code *kerr.Error, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// KafkaCode returns the Kafka error code carried by err, and false if it carries none.
func KafkaCode(err error) (int16, bool) {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Code, true
	}
	return 0, false
}

// Errors without a message of their own, for errors.Is.
var (
	// ErrBrokerIDInUse: another live node holds this id (DUPLICATE_BROKER_REGISTRATION).
	ErrBrokerIDInUse = &Error{Code: kerr.DuplicateBrokerRegistration, Message: "broker id is registered by a live node"}
	// ErrRegistrationLost: this node's lease expired or was revoked; it is fenced until
	// it registers again (STALE_BROKER_EPOCH).
	ErrRegistrationLost = &Error{Code: kerr.StaleBrokerEpoch, Message: "registration lost"}
	// ErrConcurrentUpdate: the compare-and-swap lost to another writer
	// (INVALID_UPDATE_VERSION); re-read the state and decide again.
	ErrConcurrentUpdate = &Error{Code: kerr.InvalidUpdateVersion, Message: "partition state changed concurrently"}
)
