"""Pure pipeline logic over the ports: gates, effects, advance, tasks, jobs."""
