"""Stand-ins for the services orch talks to: real HTTP servers on 127.0.0.1, no mocks."""
