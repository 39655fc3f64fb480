package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/exactonce/exactonce/internal/buildinfo"
)

// versionTimeout bounds the server half of `exactonce version`, well
// under the default --timeout: a version check should not hang.
const versionTimeout = 5 * time.Second

// versionReport is the -o json form of `exactonce version`.
type versionReport struct {
	Client buildinfo.Info `json:"client"`
	Server serverVersion  `json:"server"`
}

// serverVersion is what the node at --addr said, or why it said nothing.
type serverVersion struct {
	Address string `json:"address"`
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print this client's version and, when it can reach --addr, the server's",
		Long: "Print this client's version (version, revision, Go release) and the version of the\n" +
			"node at --addr: from GET /v1/cluster with an admin token, otherwise from the\n" +
			"exactonce_build_info series of its /metrics. A node that cannot be reached is\n" +
			"reported, and the command still exits 0: the client's version was printed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep := versionReport{Client: buildinfo.Get(), Server: serverVersion{Address: a.g.addr}}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), min(a.g.timeout, versionTimeout))
			defer cancel()
			if v, err := c.ServerVersion(ctx); err != nil {
				rep.Server.Error = err.Error()
			} else {
				rep.Server.Version = v
			}
			switch a.g.output {
			case formatDefault:
				fmt.Fprintf(a.stdout, "client: exactonce %s\n", rep.Client)
				if rep.Server.Error != "" {
					fmt.Fprintf(a.stderr, "server: %s: not reached: %s\n", rep.Server.Address, rep.Server.Error)
				} else if _, err := fmt.Fprintf(a.stdout, "server: exactonced %s (%s)\n", rep.Server.Version, rep.Server.Address); err != nil {
					return &exitError{exitFailure, err}
				}
				return nil
			case formatTable:
				rows := []map[string]string{
					{"component": "client", "version": rep.Client.Version, "revision": rep.Client.Revision, "goVersion": rep.Client.GoVersion},
					{"component": "server", "version": rep.Server.Version, "address": rep.Server.Address, "error": rep.Server.Error},
				}
				raw, err := json.Marshal(rows)
				if err != nil {
					return &exitError{exitFailure, err}
				}
				return a.print(raw)
			default:
				raw, err := json.Marshal(rep)
				if err != nil {
					return &exitError{exitFailure, err}
				}
				return a.print(raw)
			}
		},
	}
}
