module github.com/northstar-oci/northstar

go 1.26.8

require (
	github.com/cyphar/filepath-securejoin v0.6.1
	github.com/google/go-tpm v0.9.8
	github.com/opencontainers/runtime-spec v1.1.0
	github.com/pelletier/go-toml/v2 v2.2.4
	golang.org/x/sys v0.49.0
)

require (
	cyphar.com/go-pathrs v0.2.1 // indirect
	github.com/google/go-tpm-tools v0.3.13-0.20230620182252-4639ecce2aba // indirect
	github.com/google/uuid v1.4.0 // indirect
	golang.org/x/crypto v0.45.0 // indirect
	google.golang.org/protobuf v1.35.2 // indirect
)
