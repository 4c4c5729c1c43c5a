"""Run-side wiring of the evolutionary search: config, state store, evaluation (local or Ray
actors), the Pareto report and export. The search itself lives in :mod:`evolution`."""
