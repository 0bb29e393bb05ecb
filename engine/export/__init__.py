"""`sluice export`: CI definitions generated from a pipeline, one exporter per CI system."""
