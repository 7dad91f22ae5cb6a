"""Directory use cases with fakes: number lookup and re-runnable import."""

from __future__ import annotations

from collections.abc import Sequence

from callbridge.domain.directory import Contact, ContactKind, MatchKind, Phone
from callbridge.services.contacts_import import ContactDraft, RowError, parse_contacts_csv
from callbridge.services.directory import ImportReport, apply_import, lookup, number_key


class FakeFinder:
    def __init__(self, contacts: list[Contact]) -> None:
        self.contacts = contacts

    async def by_number_key(self, key: str) -> list[Contact]:
        return [c for c in self.contacts if any(p.key == key for p in c.phones)]


class FakeTarget:
    def __init__(self) -> None:
        self.contacts: dict[int, tuple[ContactDraft, int | None, int | None]] = {}
        self.users = {"alice": 1}

    async def id_by_external_id(self, external_id: str) -> int | None:
        return next((i for i, (d, _, _) in self.contacts.items() if d.external_id == external_id), None)

    async def id_by_number_keys(self, keys: Sequence[str]) -> int | None:
        wanted = set(keys)
        return next((i for i, (d, _, _) in self.contacts.items() if wanted & {p.key for p in d.phones}), None)

    async def company_id_by_name(self, name: str) -> int | None:
        return next(
            (
                i
                for i, (d, _, _) in self.contacts.items()
                if d.kind is ContactKind.COMPANY and d.name.casefold() == name.casefold()
            ),
            None,
        )

    async def person_id_by_name(self, name: str, company_id: int | None, email: str) -> int | None:
        return next(
            (
                i
                for i, (d, company, _) in self.contacts.items()
                if d.kind is ContactKind.PERSON
                and d.name.casefold() == name.casefold()
                and company == company_id
                and d.email.lower() == email.lower()
            ),
            None,
        )

    async def owner_id_by_name(self, name: str) -> int | None:
        return self.users.get(name)

    async def create(self, draft: ContactDraft, company_id: int | None, owner_id: int | None) -> int:
        new_id = len(self.contacts) + 1
        self.contacts[new_id] = (draft, company_id, owner_id)
        return new_id

    async def update(
        self, contact_id: int, draft: ContactDraft, company_id: int | None, owner_id: int | None
    ) -> None:
        self.contacts[contact_id] = (draft, company_id, owner_id)


CSV = (
    "Name,Company,Phone,Owner,External ID\n"
    "Ada,Acme,+1 415 555 0100,alice,\n"
    "Bob,Acme,+1 415 555 0101,,\n"
    "Carol,,+1 415 555 0102,mallory,\n"
    "Dan,,+1 415 555 0103,,crm-1\n"
)


async def test_import_creates_companies_once_and_reports_unknown_owners() -> None:
    target = FakeTarget()
    parsed = parse_contacts_csv(CSV, "US")
    report = await apply_import(target, parsed.rows, ImportReport())
    assert (report.created, report.updated, report.companies_created) == (3, 0, 1)
    assert [str(e) for e in report.errors] == ["line 4: owner 'mallory' is not a user"]
    names = {d.name: (company, owner) for d, company, owner in target.contacts.values()}
    acme_id = next(i for i, (d, _, _) in target.contacts.items() if d.name == "Acme")
    assert names["Ada"] == (acme_id, 1)
    assert names["Bob"] == (acme_id, None)


async def test_import_twice_creates_no_duplicates() -> None:
    target = FakeTarget()
    ticks: list[int] = []
    await apply_import(target, parse_contacts_csv(CSV, "US").rows, ImportReport())
    count = len(target.contacts)
    changed = CSV.replace("Dan,,+1 415 555 0103", "Daniel,,+1 415 555 0199")
    report = await apply_import(target, parse_contacts_csv(changed, "US").rows, ImportReport(), ticks.append)
    assert len(target.contacts) == count
    assert (report.created, report.updated) == (0, 3)
    assert sum(ticks) == 4
    dan = [d for d, _, _ in target.contacts.values() if d.external_id == "crm-1"]
    assert [d.name for d in dan] == ["Daniel"]


async def test_lookup_uses_the_e164_key() -> None:
    ada = Contact(id=1, kind=ContactKind.PERSON, name="Ada", phones=(Phone("", "+493012345678"),))
    finder = FakeFinder([ada])
    assert (await lookup(finder, "030 12345678", "DE")).contact == ada
    assert (await lookup(finder, "+49 30 12345678", "US")).kind is MatchKind.CONTACT
    assert (await lookup(finder, "1001", "DE")).kind is MatchKind.NONE
    assert (await lookup(finder, "junk", "DE")).kind is MatchKind.NONE
    assert number_key("(415) 555-0100", "US") == "+14155550100"
    assert number_key("200", "US") == ""


async def test_rerun_matches_rows_without_number_or_id_on_name_company_and_email() -> None:
    target = FakeTarget()
    text = "Name,Company,Email\nEve,Acme,eve@acme.test\nMallory,,\nTrent,Acme,trent@acme.test\n"
    first = await apply_import(target, parse_contacts_csv(text, "US").rows, ImportReport())
    assert (first.created, first.updated, first.companies_created) == (3, 0, 1)
    assert first.summary() == "3 created, 0 updated, 1 company created"
    again = await apply_import(target, parse_contacts_csv(text, "US").rows, ImportReport())
    assert (again.created, again.updated, again.companies_created) == (0, 3, 0)
    assert len(target.contacts) == 4
    # Another company or another e-mail is another person.
    other = "Name,Company,Email\nEve,Globex,eve@acme.test\nEve,Acme,eve@other.test\n"
    third = await apply_import(target, parse_contacts_csv(other, "US").rows, ImportReport())
    assert (third.created, third.updated, third.companies_created) == (2, 0, 1)


def test_report_summary_says_one_and_many_properly() -> None:
    report = ImportReport(created=1, updated=2, companies_created=2)
    report.errors.append(RowError(3, "x"))
    assert report.summary() == "1 created, 2 updated, 2 companies created, 1 row not imported"
    report.errors.append(RowError(4, "y"))
    assert report.summary().endswith("2 rows not imported")
