package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ErrBadCommand wraps every failure to decode a log entry.
var ErrBadCommand = errors.New("fsm: bad command")

// ErrUnknownFormat wraps (with ErrBadCommand) a log entry whose format
// version this build does not know: written by a newer build.
var ErrUnknownFormat = errors.New("unknown format version")

// ErrUnknownCommand wraps (with ErrBadCommand) a log entry of a known
// format version whose command type this build does not know: written by a
// newer build.
var ErrUnknownCommand = errors.New("unknown command type")

// EncodeCommand encodes a command for the log: the format version byte
// (CommandFormat) followed by the compact binary encoding of binary.go.
func EncodeCommand(c *Command) ([]byte, error) {
	if c == nil {
		return nil, errors.New("fsm: encode nil command")
	}
	b, err := encodeCommandBinary(c)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode command: %w", err)
	}
	return b, nil
}

// DecodeCommand decodes a log entry's data. Every failure wraps
// ErrBadCommand; an entry of another format version also wraps
// ErrUnknownFormat, an unknown command type ErrUnknownCommand (both mean a
// newer build wrote it). Malformed data and commands whose body does not
// match their type are errors too, never a panic.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty entry", ErrBadCommand)
	}
	if b[0] != CommandFormat {
		return nil, fmt.Errorf("%w: %w %d (this build reads %d)", ErrBadCommand, ErrUnknownFormat, b[0], CommandFormat)
	}
	c, err := decodeCommandBinary(b[1:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	return c, nil
}

// validateCommand checks that the body for the command's type is present.
func validateCommand(c *Command) error {
	switch c.Type {
	case CmdCreateActions:
		if c.Create == nil {
			return errors.New("create without body")
		}
	case CmdConsume:
		if c.Consume == nil {
			return errors.New("consume without body")
		}
	case CmdCancel:
		if c.Cancel == nil {
			return errors.New("cancel without body")
		}
	case CmdCreateClient:
		if c.CreateClient == nil {
			return errors.New("create client without body")
		}
	case CmdRevokeClient:
		if c.RevokeClient == nil {
			return errors.New("revoke client without body")
		}
	case CmdRecordKeyCheck:
		if c.KeyCheck == nil {
			return errors.New("key check without body")
		}
	case CmdSetRetention:
		if c.SetRetention == nil {
			return errors.New("set retention without body")
		}
	case CmdNoop:
	default:
		return fmt.Errorf("%w %d", ErrUnknownCommand, c.Type)
	}
	return nil
}

// encodeValue encodes a stored JSON value (clients, idempotency records).
func encodeValue(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return b, nil
}

// decodeValue decodes a stored JSON value.
func decodeValue(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}
