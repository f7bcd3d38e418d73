// SPDX-License-Identifier: Apache-2.0

package remedy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/seal/tpmconn"
	"github.com/northstar-oci/northstar/store"
)

func TestExplain(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string // the whole message
	}{
		{"not initialized", fmt.Errorf("%w in /var/lib/northstar", store.ErrNotInitialized),
			"no lifecycle secret in /var/lib/northstar; run 'northstarctl init'"},
		{"PCRs changed", fmt.Errorf("tpm2.Unseal: %w (sha256 PCR 7)", seal.ErrPCRChanged),
			"tpm2.Unseal: the sealed secret is bound to PCRs that changed since it was sealed (sha256 PCR 7); run 'northstarctl rotate'"},
		{"another TPM", fmt.Errorf("tpm unseal: %w", seal.ErrWrongKey),
			"tpm unseal: sealed blob belongs to another key or TPM; run 'northstarctl rotate'"},
		{"host key gone", fmt.Errorf("host key: %w: /s/host.key is missing", seal.ErrNoKey),
			"host key: sealing key is not available: /s/host.key is missing; run 'northstarctl rotate'"},
		{"corrupt record", fmt.Errorf("/s/secret.json: %w", seal.ErrCorrupt),
			"/s/secret.json: sealed blob is corrupt or truncated; run 'northstarctl rotate'"},
		{"sealer changed", fmt.Errorf("%w (sealed by \"host\")", store.ErrSealerMismatch),
			"the secret was sealed by another sealer than the configured one (sealed by \"host\"); run 'northstarctl rotate'"},
		{"unreachable TPM: the message has its own hint", fmt.Errorf("tpm: open /dev/tpmrm0: no such device; check [tpm] path: %w", tpmconn.ErrUnreachable),
			"tpm: open /dev/tpmrm0: no such device; check [tpm] path: TPM not reachable"},
		{"SRK changed: a plain rotate cannot help", fmt.Errorf("tpm seal: %w", seal.ErrSRKChanged),
			"tpm seal: the TPM's storage root key is not the one the secret was sealed under; if the TPM was cleared or replaced on purpose, run 'northstarctl rotate --new-srk'; otherwise find what answers at [tpm] path"},
		{"anything else", errors.New("mount: EPERM"), "mount: EPERM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Explain(tt.err)
			if got.Error() != tt.want {
				t.Errorf("Explain = %q\nwant       %q", got, tt.want)
			}
			if !errors.Is(got, tt.err) {
				t.Error("Explain does not wrap the original error")
			}
			if strings.Count(got.Error(), "northstarctl") > 1 {
				t.Errorf("remedy named twice: %q", got)
			}
		})
	}
	if Explain(nil) != nil {
		t.Error("Explain(nil) != nil")
	}
}
