// crdcheck runs the API server's own CRD code on the generated CRDs, without an API server.
//
//	crdcheck CRD.yaml                 validate the CRD (structural schema, CEL compilation and cost budget)
//	crdcheck CRD.yaml CASES.json      also validate objects: CASES.json is [{"obj": {...}, "old": {...}|null}]
//
// Each object goes through what the API server does on create/update: null pruning, defaulting, pruning of
// unknown fields, OpenAPI schema validation, list-type (set/map) validation and the CEL rules (with oldSelf for
// transition rules when "old" is given). The output is one JSON list of {"errors": [...], "obj": defaulted}.
// The unit tests use it to keep the Python rules in agreement with the CRD.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

type testCase struct {
	Obj map[string]interface{} `json:"obj"`
	Old map[string]interface{} `json:"old"`
}

type outcome struct {
	Errors []string               `json:"errors"`
	Obj    map[string]interface{} `json:"obj"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crdcheck CRD.yaml [CASES.json]")
		os.Exit(64)
	}
	raw, err := os.ReadFile(os.Args[1])
	must(err)
	var v1crd apiextensionsv1.CustomResourceDefinition
	// Strict: a key the API server does not know would be dropped (or refused with fieldValidation=Strict).
	must(yaml.UnmarshalStrict(raw, &v1crd))
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(&v1crd)
	var crd apiextensions.CustomResourceDefinition
	must(apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1crd, &crd, nil))
	if errs := validation.ValidateCustomResourceDefinition(context.Background(), &crd); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(os.Stderr, "CRD:", e.Error())
		}
		os.Exit(2)
	}
	if len(os.Args) < 3 {
		fmt.Println("CRD OK")
		return
	}

	schema := crd.Spec.Validation.OpenAPIV3Schema // versions with identical schemas are folded here
	if crd.Spec.Versions[0].Schema != nil {
		schema = crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	}
	ss, err := structuralschema.NewStructural(schema)
	must(err)
	validator, _, err := apiservervalidation.NewSchemaValidator(schema)
	must(err)
	celValidator := cel.NewValidator(ss, true, celconfig.PerCallLimit)

	casesRaw, err := os.ReadFile(os.Args[2])
	must(err)
	var cases []testCase
	// The API server's decoder: integers stay int64 (CEL rules tell int from double).
	must(utiljson.Unmarshal(casesRaw, &cases))
	out := make([]outcome, 0, len(cases))
	for _, c := range cases {
		prepare(c.Obj, ss)
		var old interface{}
		if c.Old != nil {
			prepare(c.Old, ss)
			old = c.Old
		}
		errs := apiservervalidation.ValidateCustomResource(nil, c.Obj, validator)
		errs = append(errs, structurallisttype.ValidateListSetsAndMaps(nil, ss, c.Obj)...)
		celErrs, _ := celValidator.Validate(context.Background(), nil, ss, c.Obj, old, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
		msgs := make([]string, 0, len(errs))
		for _, e := range errs {
			msgs = append(msgs, e.Error())
		}
		out = append(out, outcome{Errors: msgs, Obj: c.Obj})
	}
	must(json.NewEncoder(os.Stdout).Encode(out))
}

func prepare(obj map[string]interface{}, ss *structuralschema.Structural) {
	structuraldefaulting.PruneNonNullableNullsWithoutDefaults(obj, ss)
	structuraldefaulting.Default(obj, ss)
	structuralpruning.Prune(obj, ss, true)
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
