// SPDX-License-Identifier: Apache-2.0

package configured

import (
	"testing"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/seal"
)

func TestSealerFollowsConfig(t *testing.T) {
	for _, kind := range []string{seal.KindHost, seal.KindTPM} {
		cfg := config.Default()
		cfg.StateDir = t.TempDir()
		cfg.Sealer = kind
		st, err := Store(cfg)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if st.Sealer().Name() != kind || st.Dir() != cfg.StateDir {
			t.Errorf("%s: store in %s with sealer %s", kind, st.Dir(), st.Sealer().Name())
		}
	}
	cfg := config.Default()
	cfg.Sealer = "aws"
	if _, err := Sealer(cfg); err == nil {
		t.Error("unknown sealer accepted")
	}
	cfg = config.Default()
	cfg.TPM.PCRs = []int{99}
	if _, err := Sealer(cfg); err == nil {
		t.Error("PCR 99 accepted")
	}
}
