package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/exactonce/exactonce/client"
)

func (a *app) createCmd() *cobra.Command {
	var payload, pin, activeAt, expiresAt, csvFile string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an action (--payload) or a batch from CSV (--csv FILE)",
		Example: `  exactonce create --payload '{"userId":"42","action":"login"}' --expires-at +15m
  exactonce create --payload @payload.json --pin 4821
  exactonce create --csv actions.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if csvFile != "" {
				if payload != "" || pin != "" || activeAt != "" || expiresAt != "" {
					return errors.New("--csv takes the payload, pin and times from the file; drop the other flags")
				}
				var r io.Reader = a.stdin
				if csvFile != "-" {
					f, err := os.Open(csvFile)
					if err != nil {
						return fmt.Errorf("--csv: %w", err)
					}
					defer f.Close()
					r = f
				}
				var res *client.CSVResult
				if err := a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
					var err error
					res, err = c.CreateCSV(ctx, r, opts...)
					return err
				}, a.writeOpts()...); err != nil {
					return err
				}
				if res.Failed > 0 {
					return &exitError{exitPartial, fmt.Errorf("%d of %d rows failed, %d created: see \"results\"", res.Failed, res.Total, res.Created)}
				}
				return nil
			}
			if payload == "" {
				return errors.New("--payload (a JSON object) or --csv is required")
			}
			p, err := a.jsonArg("payload", payload)
			if err != nil {
				return err
			}
			now := time.Now()
			req := client.CreateRequest{Payload: p, PIN: pin}
			if req.ActiveAt, err = parseTime("active-at", activeAt, now); err != nil {
				return err
			}
			if req.ExpiresAt, err = parseTime("expires-at", expiresAt, now); err != nil {
				return err
			}
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				_, err := c.Create(ctx, req, opts...)
				return err
			}, a.writeOpts()...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&payload, "payload", "", "payload JSON object, @file or @- (stdin)")
	f.StringVar(&pin, "pin", "", "PIN required to consume (4 to 12 characters)")
	f.StringVar(&activeAt, "active-at", "", "activation time: RFC 3339 or a duration from now (+10m)")
	f.StringVar(&expiresAt, "expires-at", "", "expiry: RFC 3339 or a duration from now (+24h, 7d)")
	f.StringVar(&csvFile, "csv", "", "CSV file (header payload_json,pin,active_at,expires_at), - for stdin")
	return cmd
}

func (a *app) consumeCmd() *cobra.Command {
	var pin, consumer string
	cmd := &cobra.Command{
		Use:   "consume ID",
		Short: "Consume an action (exactly one consume ever succeeds)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req *client.ConsumeRequest
			if pin != "" || consumer != "" {
				cons, err := a.jsonArg("consumer", consumer)
				if err != nil {
					return err
				}
				req = &client.ConsumeRequest{PIN: pin, Consumer: cons}
			}
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				_, err := c.Consume(ctx, args[0], req, opts...)
				return err
			}, a.writeOpts()...)
		},
	}
	cmd.Flags().StringVar(&pin, "pin", "", "the action's PIN")
	cmd.Flags().StringVar(&consumer, "consumer", "", "JSON object kept in the audit record (at most 1 KiB)")
	return cmd
}

func (a *app) getCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "get ID",
		Aliases: []string{"verify"},
		Short:   "Show an action's state (never its payload or PIN)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				_, err := c.Get(ctx, args[0], opts...)
				return err
			}, a.readOpts()...)
		},
	}
}

func (a *app) listCmd() *cobra.Command {
	var q client.ListQuery
	var createdFrom, createdTo, activeFrom, activeTo string
	var all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List actions with filters; --all follows nextToken to the end",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			var err error
			for _, t := range []struct {
				flag string
				s    string
				dst  *time.Time
			}{
				{"created-from", createdFrom, &q.CreatedFrom}, {"created-to", createdTo, &q.CreatedTo},
				{"active-from", activeFrom, &q.ActiveFrom}, {"active-to", activeTo, &q.ActiveTo},
			} {
				if *t.dst, err = parseTime(t.flag, t.s, now); err != nil {
					return err
				}
			}
			if !all {
				return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
					_, err := c.List(ctx, q, opts...)
					return err
				}, a.readOpts()...)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), a.g.timeout)
			defer cancel()
			// Keep the server's action objects as they are, page after page.
			actions := []json.RawMessage{}
			for {
				var raw []byte
				page, err := c.List(ctx, q, append(a.readOpts(), client.CaptureBody(&raw))...)
				if err != nil {
					return apiFailure(err)
				}
				var body struct {
					Actions []json.RawMessage `json:"actions"`
				}
				if err := json.Unmarshal(raw, &body); err != nil {
					return &exitError{exitFailure, fmt.Errorf("decode list page: %w", err)}
				}
				actions = append(actions, body.Actions...)
				if page.NextToken == nil || *page.NextToken == "" {
					break
				}
				if *page.NextToken == q.NextToken {
					return &exitError{exitFailure, fmt.Errorf("list: server repeated nextToken %q", q.NextToken)}
				}
				q.NextToken = *page.NextToken
			}
			out, err := json.Marshal(map[string]any{"actions": actions, "nextToken": nil})
			if err != nil {
				return &exitError{exitFailure, fmt.Errorf("encode list: %w", err)}
			}
			return a.print(out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.State, "state", "", "pending|active|consumed|expired|canceled")
	f.StringVar(&q.ConsumedReason, "consumed-reason", "", "consumed|invalid_pin_burned")
	f.StringVar(&createdFrom, "created-from", "", "created at or after (RFC 3339 or -duration)")
	f.StringVar(&createdTo, "created-to", "", "created before (RFC 3339 or -duration)")
	f.StringVar(&activeFrom, "active-from", "", "active at or after (RFC 3339 or duration)")
	f.StringVar(&activeTo, "active-to", "", "active before (RFC 3339 or duration)")
	f.StringVar(&q.OrderBy, "order-by", "", "createdAt|activeAt|expiresAt (server default createdAt)")
	f.StringVar(&q.Order, "order", "", "asc|desc (server default desc)")
	f.IntVar(&q.Limit, "limit", 0, "page size (server default 100, max 1000)")
	f.StringVar(&q.NextToken, "next-token", "", "cursor from a previous page")
	f.BoolVar(&all, "all", false, "follow nextToken and print every matching action")
	return cmd
}

func (a *app) cancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel an unconsumed action",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				_, err := c.Cancel(ctx, args[0], opts...)
				return err
			}, a.writeOpts()...)
		},
	}
}

func (a *app) statsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Show the client's counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				_, err := c.Stats(ctx, opts...)
				return err
			}, a.readOpts()...)
		},
	}
}

func (a *app) clientsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "clients", Short: "Manage API clients (admin token)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "create NAME",
		Short: "Create a client; its secret is shown only now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				_, err := c.CreateClient(ctx, args[0], opts...)
				return err
			})
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List clients",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				_, err := c.ListClients(ctx, opts...)
				return err
			})
		},
	}, &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a client at once on every node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				_, err := c.RevokeClient(ctx, args[0], opts...)
				return err
			})
		},
	})
	return cmd
}

func (a *app) clusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Inspect and operate the cluster (admin token)"}
	var to string
	transfer := &cobra.Command{
		Use:   "transfer",
		Short: "Transfer leadership (to --to ID, or to any other voter)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				_, err := c.TransferLeadership(ctx, to, opts...)
				return err
			})
		},
	}
	transfer.Flags().StringVar(&to, "to", "", "node id of the new leader")
	var withHash bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show members, leader and indexes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				get := c.ClusterStatus
				if withHash {
					get = c.ClusterStatusWithHash
				}
				_, err := get(ctx, opts...)
				return err
			})
		},
	}
	status.Flags().BoolVar(&withHash, "state-hash", false, "also show the node's state hash (reads the node's whole state)")
	cmd.AddCommand(status, transfer, &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a node from the Raft configuration",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				_, err := c.RemoveServer(ctx, args[0], opts...)
				return err
			})
		},
	})
	return cmd
}

func (a *app) demoCmd() *cobra.Command {
	var reveal bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Create a no-signup demo action (no credentials); --reveal also opens it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var d *client.Demo
			if err := a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				var err error
				d, err = c.Demo(ctx, opts...)
				return err
			}); err != nil || !reveal {
				return err
			}
			return a.call(cmd, func(ctx context.Context, c *client.Client, opts []client.CallOption) error {
				_, err := c.Reveal(ctx, d.RevealURL, opts...)
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&reveal, "reveal", false, "open the revealUrl once (consumes the demo action)")
	return cmd
}
