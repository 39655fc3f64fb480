package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// commandVersionJSON is the first byte of a JSON-encoded log entry.
const commandVersionJSON byte = 1

// ErrBadCommand wraps every failure to decode a log entry.
var ErrBadCommand = errors.New("fsm: bad command")

// EncodeCommand encodes a command for the log: a version byte followed by
// the encoding of that version. It writes version 3 (compact binary, see
// binary.go); versions 2 (binary without MaxActions) and 1 (JSON) are still
// decoded.
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

// encodeCommandJSON encodes c as version 1 (JSON).
func encodeCommandJSON(c *Command) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(commandVersionJSON)
	if err := json.NewEncoder(&buf).Encode(c); err != nil {
		return nil, fmt.Errorf("fsm: encode command: %w", err)
	}
	return buf.Bytes(), nil
}

// DecodeCommand decodes a log entry's data. Unknown versions, malformed
// data and commands whose body does not match their type are errors
// wrapping ErrBadCommand.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty entry", ErrBadCommand)
	}
	switch b[0] {
	case commandVersionBinary, commandVersionBinaryV2:
		c, err := decodeCommandBinary(b[0], b[1:])
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
		}
		return c, nil
	case commandVersionJSON:
	default:
		return nil, fmt.Errorf("%w: unknown version %d", ErrBadCommand, b[0])
	}
	var c Command
	dec := json.NewDecoder(bytes.NewReader(b[1:]))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrBadCommand)
	}
	if err := validateCommand(&c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	return &c, nil
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
		return fmt.Errorf("unknown command type %d", c.Type)
	}
	return nil
}

// encodeValue encodes a stored value (actions, clients, records).
func encodeValue(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return b, nil
}

// decodeValue decodes a stored value.
func decodeValue(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}
