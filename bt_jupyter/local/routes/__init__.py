"""The local service's routes, one module per resource, each exposing an ``APIRouter``;
app.py includes them in order, and a route's ``state: State`` parameter is the service's state."""
