"""Teams by name: Baseten's REST paths take a team's id, people know its name.

The id comes from the same GraphQL query ``truss train push --team`` makes.
"""

from __future__ import annotations

from bt_jupyter import serving_api
from bt_jupyter.client import ApiClient
from bt_jupyter.errors import (
    UnknownTeam,
)

TEAMS_QUERY = """
query Teams {
    teams {
        id
        name
        default
    }
}
"""


def teams(rest: ApiClient) -> list[serving_api.TeamV1]:
    return [serving_api.TeamV1.model_validate(t) for t in rest.graphql(TEAMS_QUERY)["teams"]]


def team_id(rest: ApiClient, team: str) -> str:
    """The id of a team given by name or by id."""
    known = teams(rest)
    for found in known:
        if team in (found.name, found.id):
            return found.id
    names = ", ".join(repr(t.name) for t in known) or "none"
    raise UnknownTeam(f"no team {team!r} for this API key; its teams are {names}")
