// Command schemaprovider is a Terraform provider plugin that knows a provider's schema and
// nothing else: enough for a real `terraform init` and `terraform validate` of terraform/ offline,
// where the real provider binaries cannot be downloaded.
//
// It serves the schema in schema.json beside its own executable, in the shape
// `terraform providers schema -json` prints for one provider ({"provider_name", "provider",
// "resource_schemas", "data_source_schemas"}). The tests copy it into a filesystem mirror once per
// provider and version, each copy beside that version's schema. Every configuration is accepted:
// Terraform itself checks arguments, blocks, required and computed-only attributes against the
// schema, which is what `validate` is about. Planning or applying is refused.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/hashicorp/terraform-plugin-go/tfprotov5"
	"github.com/hashicorp/terraform-plugin-go/tfprotov5/tf5server"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// The JSON shape of one schema, as `terraform providers schema -json` writes it.
type jsonSchema struct {
	Version int64     `json:"version"`
	Block   jsonBlock `json:"block"`
}

type jsonBlock struct {
	Attributes map[string]jsonAttribute   `json:"attributes"`
	BlockTypes map[string]jsonNestedBlock `json:"block_types"`
	Deprecated bool                       `json:"deprecated"`
}

type jsonAttribute struct {
	Type       json.RawMessage `json:"type"`
	Required   bool            `json:"required"`
	Optional   bool            `json:"optional"`
	Computed   bool            `json:"computed"`
	Sensitive  bool            `json:"sensitive"`
	Deprecated bool            `json:"deprecated"`
	WriteOnly  bool            `json:"write_only"`
}

type jsonNestedBlock struct {
	Block       jsonBlock `json:"block"`
	NestingMode string    `json:"nesting_mode"`
	MinItems    int64     `json:"min_items"`
	MaxItems    int64     `json:"max_items"`
}

type jsonProvider struct {
	Name        string                `json:"provider_name"`
	Provider    *jsonSchema           `json:"provider"`
	Resources   map[string]jsonSchema `json:"resource_schemas"`
	DataSources map[string]jsonSchema `json:"data_source_schemas"`
}

var nestingModes = map[string]tfprotov5.SchemaNestedBlockNestingMode{
	"single": tfprotov5.SchemaNestedBlockNestingModeSingle,
	"group":  tfprotov5.SchemaNestedBlockNestingModeGroup,
	"list":   tfprotov5.SchemaNestedBlockNestingModeList,
	"set":    tfprotov5.SchemaNestedBlockNestingModeSet,
	"map":    tfprotov5.SchemaNestedBlockNestingModeMap,
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func convertBlock(path string, b jsonBlock) (*tfprotov5.SchemaBlock, error) {
	block := &tfprotov5.SchemaBlock{Deprecated: b.Deprecated}
	for _, name := range sortedKeys(b.Attributes) {
		a := b.Attributes[name]
		if len(a.Type) == 0 {
			return nil, fmt.Errorf("%s.%s: no type (nested attribute types need protocol 6)", path, name)
		}
		typ, err := tftypes.ParseJSONType(a.Type)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", path, name, err)
		}
		block.Attributes = append(block.Attributes, &tfprotov5.SchemaAttribute{
			Name: name, Type: typ, Required: a.Required, Optional: a.Optional, Computed: a.Computed,
			Sensitive: a.Sensitive, Deprecated: a.Deprecated, WriteOnly: a.WriteOnly,
		})
	}
	for _, name := range sortedKeys(b.BlockTypes) {
		nb := b.BlockTypes[name]
		mode, ok := nestingModes[nb.NestingMode]
		if !ok {
			return nil, fmt.Errorf("%s.%s: unknown nesting mode %q", path, name, nb.NestingMode)
		}
		inner, err := convertBlock(path+"."+name, nb.Block)
		if err != nil {
			return nil, err
		}
		block.BlockTypes = append(block.BlockTypes, &tfprotov5.SchemaNestedBlock{
			TypeName: name, Block: inner, Nesting: mode, MinItems: nb.MinItems, MaxItems: nb.MaxItems,
		})
	}
	return block, nil
}

func convertSchemas(kind string, in map[string]jsonSchema) (map[string]*tfprotov5.Schema, error) {
	out := make(map[string]*tfprotov5.Schema, len(in))
	for name, s := range in {
		block, err := convertBlock(kind+" "+name, s.Block)
		if err != nil {
			return nil, err
		}
		out[name] = &tfprotov5.Schema{Version: s.Version, Block: block}
	}
	return out, nil
}

// computedOnlySet lists the paths, in a configuration value of the block, where a computed-only
// attribute has a value (null is unset; an unknown value is set).
func computedOnlySet(block *tfprotov5.SchemaBlock, value tftypes.Value, path *tftypes.AttributePath) []*tftypes.AttributePath {
	if value.IsNull() || !value.IsKnown() {
		return nil
	}
	var fields map[string]tftypes.Value
	if err := value.As(&fields); err != nil {
		return nil
	}
	var found []*tftypes.AttributePath
	for _, a := range block.Attributes {
		if a.Computed && !a.Optional && !a.Required {
			if v, ok := fields[a.Name]; ok && !v.IsNull() {
				found = append(found, path.WithAttributeName(a.Name))
			}
		}
	}
	for _, nb := range block.BlockTypes {
		v, ok := fields[nb.TypeName]
		if !ok || v.IsNull() || !v.IsKnown() {
			continue
		}
		inner := path.WithAttributeName(nb.TypeName)
		switch nb.Nesting {
		case tfprotov5.SchemaNestedBlockNestingModeSingle, tfprotov5.SchemaNestedBlockNestingModeGroup:
			found = append(found, computedOnlySet(nb.Block, v, inner)...)
		default:
			var items []tftypes.Value
			if err := v.As(&items); err != nil {
				var byKey map[string]tftypes.Value
				if v.As(&byKey) == nil {
					for key, item := range byKey {
						found = append(found, computedOnlySet(nb.Block, item, inner.WithElementKeyString(key))...)
					}
				}
				continue
			}
			for i, item := range items {
				found = append(found, computedOnlySet(nb.Block, item, inner.WithElementKeyInt(i))...)
			}
		}
	}
	return found
}

func (s *server) validateConfig(schema *tfprotov5.Schema, config *tfprotov5.DynamicValue) []*tfprotov5.Diagnostic {
	if schema == nil || config == nil {
		return nil
	}
	value, err := config.Unmarshal(schema.ValueType())
	if err != nil {
		return []*tfprotov5.Diagnostic{{Severity: tfprotov5.DiagnosticSeverityError, Summary: "Invalid configuration value", Detail: err.Error()}}
	}
	var diagnostics []*tfprotov5.Diagnostic
	for _, path := range computedOnlySet(schema.Block, value, tftypes.NewAttributePath()) {
		diagnostics = append(diagnostics, &tfprotov5.Diagnostic{
			Severity: tfprotov5.DiagnosticSeverityError, Summary: "Computed attributes cannot be set",
			Detail:    fmt.Sprintf("Computed attributes cannot be set, but a value was set for %s.", path),
			Attribute: path,
		})
	}
	return diagnostics
}

// server answers the calls `init` and `validate` make; any other call (plan, apply, read) reaches
// the nil embedded interface and fails, which is what a schema-only provider should do.
type server struct {
	tfprotov5.ProviderServer
	schema *tfprotov5.GetProviderSchemaResponse
}

func (s *server) GetMetadata(context.Context, *tfprotov5.GetMetadataRequest) (*tfprotov5.GetMetadataResponse, error) {
	response := &tfprotov5.GetMetadataResponse{ServerCapabilities: s.schema.ServerCapabilities}
	for _, name := range sortedKeys(s.schema.ResourceSchemas) {
		response.Resources = append(response.Resources, tfprotov5.ResourceMetadata{TypeName: name})
	}
	for _, name := range sortedKeys(s.schema.DataSourceSchemas) {
		response.DataSources = append(response.DataSources, tfprotov5.DataSourceMetadata{TypeName: name})
	}
	return response, nil
}

func (s *server) GetProviderSchema(context.Context, *tfprotov5.GetProviderSchemaRequest) (*tfprotov5.GetProviderSchemaResponse, error) {
	return s.schema, nil
}

func (s *server) GetResourceIdentitySchemas(context.Context, *tfprotov5.GetResourceIdentitySchemasRequest) (*tfprotov5.GetResourceIdentitySchemasResponse, error) {
	return &tfprotov5.GetResourceIdentitySchemasResponse{}, nil
}

func (s *server) PrepareProviderConfig(_ context.Context, req *tfprotov5.PrepareProviderConfigRequest) (*tfprotov5.PrepareProviderConfigResponse, error) {
	return &tfprotov5.PrepareProviderConfigResponse{PreparedConfig: req.Config}, nil
}

func (s *server) ValidateResourceTypeConfig(_ context.Context, req *tfprotov5.ValidateResourceTypeConfigRequest) (*tfprotov5.ValidateResourceTypeConfigResponse, error) {
	return &tfprotov5.ValidateResourceTypeConfigResponse{Diagnostics: s.validateConfig(s.schema.ResourceSchemas[req.TypeName], req.Config)}, nil
}

func (s *server) ValidateDataSourceConfig(_ context.Context, req *tfprotov5.ValidateDataSourceConfigRequest) (*tfprotov5.ValidateDataSourceConfigResponse, error) {
	return &tfprotov5.ValidateDataSourceConfigResponse{Diagnostics: s.validateConfig(s.schema.DataSourceSchemas[req.TypeName], req.Config)}, nil
}

func (s *server) StopProvider(context.Context, *tfprotov5.StopProviderRequest) (*tfprotov5.StopProviderResponse, error) {
	return &tfprotov5.StopProviderResponse{}, nil
}

func load() (*jsonProvider, *tfprotov5.GetProviderSchemaResponse, error) {
	executable, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	data, err := os.ReadFile(filepath.Join(filepath.Dir(executable), "schema.json"))
	if err != nil {
		return nil, nil, err
	}
	var in jsonProvider
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, nil, fmt.Errorf("schema.json: %w", err)
	}
	response := &tfprotov5.GetProviderSchemaResponse{
		// The real providers plan destroys themselves; saying so keeps Terraform from asking.
		ServerCapabilities: &tfprotov5.ServerCapabilities{GetProviderSchemaOptional: true, PlanDestroy: true},
		Provider:           &tfprotov5.Schema{Block: &tfprotov5.SchemaBlock{}},
	}
	if in.Provider != nil {
		block, err := convertBlock("provider", in.Provider.Block)
		if err != nil {
			return nil, nil, err
		}
		response.Provider = &tfprotov5.Schema{Version: in.Provider.Version, Block: block}
	}
	if response.ResourceSchemas, err = convertSchemas("resource", in.Resources); err != nil {
		return nil, nil, err
	}
	if response.DataSourceSchemas, err = convertSchemas("data source", in.DataSources); err != nil {
		return nil, nil, err
	}
	return &in, response, nil
}

func main() {
	in, schema, err := load()
	if err != nil {
		fmt.Fprintln(os.Stderr, "schemaprovider:", err)
		os.Exit(1)
	}
	address := "registry.terraform.io/hashicorp/" + in.Name
	if err := tf5server.Serve(address, func() tfprotov5.ProviderServer { return &server{schema: schema} }); err != nil {
		fmt.Fprintln(os.Stderr, "schemaprovider:", err)
		os.Exit(1)
	}
}
