package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/exactonce/exactonce/internal/secure"
)

// keygenCmd prints a new cluster key, or with --check-value the check value
// of an existing key: the value a node keeps in data-dir/cluster-key.check
// and in the replicated state, to tell which key a data dir was written with.
// It needs no server.
func (a *app) keygenCmd() *cobra.Command {
	var checkFile string
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Print a new cluster key (base64 of 32 random bytes); --check-value FILE prints a key's check value",
		Long: "Print a new cluster key: base64 of 32 random bytes, to give every node of one cluster\n" +
			"(exactonced --cluster-key-file). Keep it in a file of mode 0600, for example:\n" +
			"  (umask 077; exactonce keygen > cluster.key)\n" +
			"With --check-value FILE, print the hex check value of the key in FILE instead (\"-\" reads\n" +
			"stdin): compare it with a node's data-dir/cluster-key.check.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if checkFile == "" {
				key := make([]byte, secure.KeySize)
				rand.Read(key) // never fails (crypto/rand panics on an unusable source)
				return a.printText("key", base64.StdEncoding.EncodeToString(key))
			}
			var raw []byte
			var err error
			if checkFile == "-" {
				raw, err = io.ReadAll(io.LimitReader(a.stdin, 4096))
			} else {
				raw, err = os.ReadFile(checkFile)
			}
			if err != nil {
				return fmt.Errorf("--check-value: %w", err)
			}
			key, err := secure.ParseKey(strings.TrimSpace(string(raw)))
			if err != nil {
				return fmt.Errorf("--check-value %s: %w", checkFile, err)
			}
			keys, err := secure.NewKeys(key)
			if err != nil {
				return fmt.Errorf("--check-value %s: %w", checkFile, err)
			}
			return a.printText("checkValue", fmt.Sprintf("%x", keys.CheckValue()))
		},
	}
	cmd.Flags().StringVar(&checkFile, "check-value", "", "print the check value of the cluster key in this file (\"-\": stdin) instead of a new key")
	return cmd
}

// printText prints one value: as it is by default (so that `exactonce
// keygen > cluster.key` writes just the key), or as {"name": value} for
// -o json and a FIELD/VALUE line for -o table.
func (a *app) printText(name, value string) error {
	if a.g.output == formatDefault {
		if _, err := fmt.Fprintln(a.stdout, value); err != nil {
			return &exitError{exitFailure, err}
		}
		return nil
	}
	raw, err := json.Marshal(map[string]string{name: value})
	if err != nil {
		return &exitError{exitFailure, err}
	}
	return a.print(raw)
}
