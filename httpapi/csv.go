package httpapi

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/exactonce/exactonce/fsm"
)

// csvHeader is the required CSV header, in order.
var csvHeader = []string{"payload_json", "pin", "active_at", "expires_at"}

// createCSV parses a CSV batch, validates each row on its own and proposes
// all rows (valid and failed) in one command: the valid ones are created
// together or not at all.
func (s *Server) createCSV(w http.ResponseWriter, r *http.Request, clientID string, idem *fsm.Idempotency, body []byte) {
	rows, err := s.parseCSV(body)
	if err != nil {
		var tl errTooLargeField
		if errors.As(err, &tl) {
			WriteError(w, errTooLarge, err.Error(), nil)
		} else {
			WriteError(w, errInvalid, err.Error(), nil)
		}
		return
	}
	cmd := &fsm.Command{
		Type:        fsm.CmdCreateActions,
		ClientID:    clientID,
		Idempotency: idem,
		Create: &fsm.CreateActions{
			CSV:          true,
			Rows:         rows,
			DefaultTTLMS: s.cfg.DefaultTTL.Milliseconds(),
			MaxTTLMS:     s.cfg.MaxTTL.Milliseconds(),
			MaxActions:   s.cfg.MaxActionsPerClient,
		},
	}
	if len(rows) == 0 {
		// Nothing to write; answer as the FSM would for an empty batch.
		WriteJSON(w, http.StatusOK, csvResponse{Results: []csvResult{}})
		return
	}
	s.apply(w, r, cmd, func(res *fsm.Result) (int, any) {
		if res.Code == fsm.CodeOK && !res.Replayed {
			for _, row := range res.Rows {
				if row.Error == fsm.CodeOK {
					s.metrics.creates.Inc()
				}
			}
		}
		return renderCSV(res)
	})
}

// parseCSV turns a CSV body into rows. A bad header, malformed CSV or too
// many rows fail the whole request; anything wrong inside a row is that
// row's error.
func (s *Server) parseCSV(body []byte) ([]fsm.CreateRow, error) {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	cr := csv.NewReader(bytes.NewReader(body))
	cr.FieldsPerRecord = -1 // a wrong column count is the row's error
	cr.ReuseRecord = false
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("the CSV is empty: header %s is required", strings.Join(csvHeader, ","))
	}
	if err != nil {
		return nil, fmt.Errorf("malformed CSV: %v", err)
	}
	if len(header) != len(csvHeader) {
		return nil, fmt.Errorf("the CSV header must be exactly %s", strings.Join(csvHeader, ","))
	}
	for i, h := range header {
		if !strings.EqualFold(strings.TrimSpace(h), csvHeader[i]) {
			return nil, fmt.Errorf("the CSV header must be exactly %s (column %d is %q)", strings.Join(csvHeader, ","), i+1, h)
		}
	}
	var rows []fsm.CreateRow
	for rowNum := 2; ; rowNum++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("malformed CSV at row %d: %v", rowNum, err)
		}
		if len(rows) >= s.cfg.MaxCSVRows {
			return nil, errTooLargeField{fmt.Sprintf("the CSV has more than %d rows", s.cfg.MaxCSVRows)}
		}
		row, err := s.csvRow(rec)
		if err != nil {
			rows = append(rows, fsm.CreateRow{Row: rowNum, Error: fsm.CodeInvalidRequest, Message: err.Error()})
			continue
		}
		row.Row = rowNum
		rows = append(rows, row)
	}
	return rows, nil
}

// csvRow validates one data row. Cells are trimmed; empty means "not set".
func (s *Server) csvRow(rec []string) (fsm.CreateRow, error) {
	if len(rec) != len(csvHeader) {
		return fsm.CreateRow{}, fmt.Errorf("the row has %d columns, want %d", len(rec), len(csvHeader))
	}
	for i := range rec {
		rec[i] = strings.TrimSpace(rec[i])
	}
	if rec[0] == "" {
		return fsm.CreateRow{}, errors.New("payload_json is required")
	}
	if !json.Valid([]byte(rec[0])) {
		return fsm.CreateRow{}, errors.New("payload_json is not valid JSON")
	}
	payload, err := compactObject("payload_json", json.RawMessage(rec[0]), s.cfg.MaxPayloadBytes)
	if err != nil {
		return fsm.CreateRow{}, err
	}
	pin := rec[1]
	if pin != "" {
		if err := checkPIN("pin", pin); err != nil {
			return fsm.CreateRow{}, err
		}
	}
	var activeAt, expiresAt int64
	if rec[2] != "" {
		if activeAt, err = parseTime("active_at", rec[2]); err != nil {
			return fsm.CreateRow{}, err
		}
	}
	if rec[3] != "" {
		if expiresAt, err = parseTime("expires_at", rec[3]); err != nil {
			return fsm.CreateRow{}, err
		}
	}
	if err := staticRowChecks(activeAt, expiresAt); err != nil {
		return fsm.CreateRow{}, err
	}
	return s.buildRow(payload, pin, pin != "", activeAt, expiresAt), nil
}
